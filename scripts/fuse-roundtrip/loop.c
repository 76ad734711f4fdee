/*
 * loop OP PATH N: times N calls of one operation on PATH; prints median, mean and p99 in ns.
 *   stat     stat(PATH)                        one getattr per call with attr_timeout=0
 *   pwrite   pwrite 1 byte at 0 on an open fd   one write request per call
 *   pread    pread 1 byte at 0 on an open fd    page cache unless the mount bypasses it
 *   openclose open O_RDONLY + close             open and release (+ getattr)
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static long long now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
  long long x = *(const long long *)a, y = *(const long long *)b;
  return x < y ? -1 : x > y;
}

static int one(const char *op, const char *path, int fd) {
  struct stat st;
  char c = 'x';
  if (strcmp(op, "stat") == 0) return stat(path, &st);
  if (strcmp(op, "pwrite") == 0) return pwrite(fd, &c, 1, 0) == 1 ? 0 : -1;
  if (strcmp(op, "pread") == 0) return pread(fd, &c, 1, 0) >= 0 ? 0 : -1;
  if (strcmp(op, "openclose") == 0) {
    int f = open(path, O_RDONLY);
    return f < 0 ? -1 : close(f);
  }
  fprintf(stderr, "unknown op %s\n", op);
  exit(2);
}

int main(int argc, char **argv) {
  if (argc != 4) { fprintf(stderr, "usage: loop OP PATH N\n"); return 2; }
  const char *op = argv[1], *path = argv[2];
  long n = atol(argv[3]);
  int fd = -1;
  if (strcmp(op, "pwrite") == 0 || strcmp(op, "pread") == 0) {
    fd = open(path, strcmp(op, "pwrite") == 0 ? O_RDWR : O_RDONLY);
    if (fd < 0) { perror("open"); return 1; }
  }
  long long *t = malloc(n * sizeof *t);
  for (long i = 0; i < 1000; i++) one(op, path, fd);
  long long start = now();
  for (long i = 0; i < n; i++) {
    long long t0 = now();
    if (one(op, path, fd) != 0) { perror(op); return 1; }
    t[i] = now() - t0;
  }
  long long total = now() - start;
  qsort(t, n, sizeof *t, cmp);
  printf("%-9s n=%ld median=%lld mean=%lld p99=%lld ns\n", op, n, t[n / 2], total / n, t[n * 99 / 100]);
  return 0;
}

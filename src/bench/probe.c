/*
 * The benchmark's timing loop. Each workload is a tight loop of syscalls; running it in C keeps
 * the JavaScript runtime (GC pauses, libuv threads, JIT warm-up) out of per-operation latencies
 * that are only a few microseconds long. Prints one line per sample: nanoseconds, then a count.
 *
 *   probe append1 LISTFILE       open O_WRONLY|O_APPEND, write 1 byte, close; one line per path
 *   probe chmod LISTFILE         chmod 0640; one line per path
 *   probe stat LISTFILE          lstat every path; one line: total ns, number found
 *   probe readdir DIR            list DIR once; one line: ns, number of entries (no . and ..)
 *   probe read FILE              read FILE sequentially, 1 MiB at a time; one line: ns, bytes
 *   probe write FILE BYTES       create FILE, write BYTES 1 MiB at a time, close; one line: ns, bytes
 *   probe churn DIR N            create, write 4 KiB, close, unlink N files; one line per file
 *
 * Paths are relative to the working directory, which the caller sets to the mount under test.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (1 << 20)

static long long now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what, const char *path) {
  fprintf(stderr, "probe: %s %s: %s\n", what, path, strerror(errno));
  exit(1);
}

/* The whole list is read before the clock starts. */
static char **read_list(const char *file, size_t *count) {
  FILE *f = fopen(file, "r");
  if (f == NULL) die("open", file);
  size_t cap = 1024, n = 0;
  char **paths = malloc(cap * sizeof *paths);
  char *line = NULL;
  size_t len = 0;
  ssize_t got;
  while ((got = getline(&line, &len, f)) > 0) {
    if (line[got - 1] == '\n') line[got - 1] = '\0';
    if (n == cap) paths = realloc(paths, (cap *= 2) * sizeof *paths);
    paths[n++] = strdup(line);
  }
  free(line);
  fclose(f);
  *count = n;
  return paths;
}

static int append1(const char *list) {
  size_t n;
  char **paths = read_list(list, &n);
  for (size_t i = 0; i < n; i++) {
    long long t0 = now();
    int fd = open(paths[i], O_WRONLY | O_APPEND);
    if (fd < 0) die("open", paths[i]);
    if (write(fd, "x", 1) != 1) die("write", paths[i]);
    if (close(fd) != 0) die("close", paths[i]);
    printf("%lld 1\n", now() - t0);
  }
  return 0;
}

static int chmod_list(const char *list) {
  size_t n;
  char **paths = read_list(list, &n);
  for (size_t i = 0; i < n; i++) {
    long long t0 = now();
    if (chmod(paths[i], 0640) != 0) die("chmod", paths[i]);
    printf("%lld 1\n", now() - t0);
  }
  return 0;
}

static int stat_list(const char *list) {
  size_t n, found = 0;
  char **paths = read_list(list, &n);
  struct stat st;
  long long t0 = now();
  for (size_t i = 0; i < n; i++) {
    if (lstat(paths[i], &st) == 0) found++;
    else if (errno != ENOENT) die("lstat", paths[i]);
  }
  printf("%lld %zu\n", now() - t0, found);
  return 0;
}

static int list_dir(const char *dir) {
  size_t entries = 0;
  long long t0 = now();
  DIR *d = opendir(dir);
  if (d == NULL) die("opendir", dir);
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) entries++;
  }
  closedir(d);
  printf("%lld %zu\n", now() - t0, entries);
  return 0;
}

static int read_file(const char *file) {
  char *buf = malloc(CHUNK);
  long long total = 0;
  ssize_t got;
  long long t0 = now();
  int fd = open(file, O_RDONLY);
  if (fd < 0) die("open", file);
  while ((got = read(fd, buf, CHUNK)) > 0) total += got;
  if (got < 0) die("read", file);
  close(fd);
  printf("%lld %lld\n", now() - t0, total);
  return 0;
}

static int write_file(const char *file, long long bytes) {
  char *buf = malloc(CHUNK);
  for (int i = 0; i < CHUNK; i++) buf[i] = (char)(i * 131 + 7);
  long long done = 0;
  long long t0 = now();
  int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) die("open", file);
  while (done < bytes) {
    size_t want = bytes - done < CHUNK ? (size_t)(bytes - done) : CHUNK;
    ssize_t put = write(fd, buf, want);
    if (put <= 0) die("write", file);
    done += put;
  }
  if (close(fd) != 0) die("close", file);
  printf("%lld %lld\n", now() - t0, done);
  return 0;
}

static int churn(const char *dir, long n) {
  char buf[4096], path[4096];
  memset(buf, 'c', sizeof buf);
  for (long i = 0; i < n; i++) {
    snprintf(path, sizeof path, "%s/churn-%ld", dir, i);
    long long t0 = now();
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0) die("create", path);
    if (write(fd, buf, sizeof buf) != (ssize_t)sizeof buf) die("write", path);
    if (close(fd) != 0) die("close", path);
    if (unlink(path) != 0) die("unlink", path);
    printf("%lld 1\n", now() - t0);
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 3 && strcmp(argv[1], "append1") == 0) return append1(argv[2]);
  if (argc >= 3 && strcmp(argv[1], "chmod") == 0) return chmod_list(argv[2]);
  if (argc >= 3 && strcmp(argv[1], "stat") == 0) return stat_list(argv[2]);
  if (argc >= 3 && strcmp(argv[1], "readdir") == 0) return list_dir(argv[2]);
  if (argc >= 3 && strcmp(argv[1], "read") == 0) return read_file(argv[2]);
  if (argc >= 4 && strcmp(argv[1], "write") == 0) return write_file(argv[2], atoll(argv[3]));
  if (argc >= 4 && strcmp(argv[1], "churn") == 0) return churn(argv[2], atol(argv[3]));
  fprintf(stderr, "usage: probe append1|chmod|stat LIST | readdir DIR | read FILE | write FILE BYTES | churn DIR N\n");
  return 2;
}

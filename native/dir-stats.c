/*
 * A directory's children with their lstat, in one call: what walking a layer costs per entry.
 *
 * From JS each child took a path built, a koffi call walking the whole path again and a readdir
 * entry object; here the names come from getdents and are stat'ed relative to the open directory.
 * The answer is one buffer, children sorted by the bytes of their names (the order a layer is
 * walked in):
 *   per child: uint16 name length, the name's bytes, then the 144 bytes of its struct stat.
 * A failure answers -errno instead.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <node_api.h>

_Static_assert(sizeof(struct stat) == 144, "struct stat as src/sys/stat.ts decodes it (x86_64 glibc)");

typedef struct {
  char *name;
  size_t len;
  struct stat st;
} child_t;

static int by_name (const void *a, const void *b) {
  return strcmp(((const child_t *)a)->name, ((const child_t *)b)->name);
}

static napi_value num (napi_env env, double v) {
  napi_value out;
  napi_create_double(env, v, &out);
  return out;
}

static void free_children (child_t *children, size_t n) {
  for (size_t i = 0; i < n; i++) free(children[i].name);
  free(children);
}

static napi_value list_dir (napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  char path[4096];
  size_t path_len;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_string_utf8(env, argv[0], path, sizeof path, &path_len) != napi_ok) {
    napi_throw_type_error(env, NULL, "listDir(path: string)");
    return NULL;
  }
  if (path_len >= sizeof path - 1) return num(env, -ENAMETOOLONG);
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return num(env, -errno);
  DIR *dir = fdopendir(fd);
  if (dir == NULL) {
    int err = errno;
    close(fd);
    return num(env, -err);
  }
  size_t n = 0, cap = 64, bytes = 0;
  child_t *children = malloc(cap * sizeof *children);
  int err = children == NULL ? ENOMEM : 0;
  struct dirent *d;
  while (err == 0) {
    errno = 0;
    if ((d = readdir(dir)) == NULL) {
      err = errno;
      break;
    }
    if (d->d_name[0] == '.' && (d->d_name[1] == 0 || (d->d_name[1] == '.' && d->d_name[2] == 0))) continue;
    if (n == cap) {
      child_t *more = realloc(children, (cap *= 2) * sizeof *children);
      if (more == NULL) { err = ENOMEM; break; }
      children = more;
    }
    child_t *c = &children[n];
    if (fstatat(fd, d->d_name, &c->st, AT_SYMLINK_NOFOLLOW) != 0) {
      // Gone since getdents listed it: as if it had not been listed.
      if (errno == ENOENT) continue;
      err = errno;
      break;
    }
    c->len = strlen(d->d_name);
    if ((c->name = strdup(d->d_name)) == NULL) { err = ENOMEM; break; }
    bytes += 2 + c->len + sizeof c->st;
    n++;
  }
  closedir(dir);
  if (err != 0) {
    free_children(children, n);
    return num(env, -err);
  }
  qsort(children, n, sizeof *children, by_name);
  napi_value out;
  uint8_t *p;
  if (napi_create_buffer(env, bytes, (void **)&p, &out) != napi_ok) {
    free_children(children, n);
    return num(env, -ENOMEM);
  }
  for (size_t i = 0; i < n; i++) {
    uint16_t len = (uint16_t)children[i].len;
    memcpy(p, &len, 2);
    memcpy(p + 2, children[i].name, len);
    memcpy(p + 2 + len, &children[i].st, sizeof children[i].st);
    p += 2 + len + sizeof children[i].st;
  }
  free_children(children, n);
  return out;
}

static napi_value init_module (napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "listDir", NAPI_AUTO_LENGTH, list_dir, NULL, &fn);
  napi_set_named_property(env, exports, "listDir", fn);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init_module)

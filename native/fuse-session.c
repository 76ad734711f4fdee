/*
 * A FUSE session served on Node's own thread through libfuse 3's low-level API.
 *
 * The kernel's request is read where libuv says /dev/fuse is readable and handed to JS in the
 * same turn; JS answers with the reply functions below, at once or later. No thread sits between
 * the kernel and JS, so a request costs one wake-up, not three (libfuse thread, JS thread, libfuse
 * thread again).
 */
#define FUSE_USE_VERSION 34
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <unistd.h>
#include <fuse_lowlevel.h>
#include <linux/fuse.h>
#include <node_api.h>
#include <uv.h>

/* JS reads and writes attributes, the caller and statfs answers through one shared Float64Array. */
enum { A_INO, A_MODE, A_NLINK, A_UID, A_GID, A_RDEV, A_SIZE, A_BLOCKS, A_BLKSIZE,
       A_ATIME, A_ATIME_NS, A_MTIME, A_MTIME_NS, A_CTIME, A_CTIME_NS,
       C_UID = 16, C_GID, C_PID, C_UMASK,
       F_BSIZE = 20, F_FRSIZE, F_BLOCKS, F_BFREE, F_BAVAIL, F_FILES, F_FFREE, F_FAVAIL, F_NAMEMAX,
       SCRATCH_LEN = 32 };

#define OPS(X) X(init) X(lookup) X(forget) X(getattr) X(setattr) X(readlink) X(mknod) X(mkdir) \
  X(unlink) X(rmdir) X(symlink) X(rename) X(link) X(open) X(read) X(write) X(release) X(fsync) \
  X(opendir) X(readdir) X(readdirplus) X(releasedir) X(statfs) X(setxattr) X(getxattr) X(listxattr) \
  X(removexattr) X(create) X(fallocate) X(copyFileRange) X(lseek) X(exit)
#define OP_ENUM(name) OP_##name,
#define OP_NAME(name) #name,
enum { OPS(OP_ENUM) OP_COUNT };
static const char *op_names[] = { OPS(OP_NAME) };

typedef struct {
  napi_env env;
  napi_ref handlers[OP_COUNT];
  napi_ref scratch_ref;
  napi_ref resource;
  napi_async_context async;
  double *scratch;
  struct fuse_session *se;
  struct fuse_buf buf;
  uv_poll_t poll;
  int polling;
  /* Inside fuse_session_process_buf: an unmount asked for there waits until it returns. */
  int dispatching;
  int unmount_pending;
  /* The struct goes when both are done: libuv has closed the poll handle, JS has dropped it. */
  int handle_closed;
  int released;
  int fd;
  /* Passthrough: offered by the kernel's INIT, switched on in our answer to it (see io_writev). */
  int init_offers_passthrough;
  int passthrough;
  /* The backing file the next open or create answer hands the kernel (0: none). */
  int32_t reply_backing;
} session_t;

#define CHECK(call) do { if ((call) != napi_ok) { napi_throw_error(env, NULL, #call " failed"); return NULL; } } while (0)

static napi_value num (napi_env env, double v) {
  napi_value r;
  napi_create_double(env, v, &r);
  return r;
}

static napi_value str (napi_env env, const char *s) {
  napi_value r;
  napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &r);
  return r;
}

static napi_value bytes (napi_env env, const char *data, size_t len) {
  napi_value r;
  void *copy;
  napi_create_buffer_copy(env, len, data, &copy, &r);
  return r;
}

/* Pointers are below 2^53 on every 64-bit Linux, so a request crosses as a plain number. */
static napi_value req_value (napi_env env, fuse_req_t req) {
  return num(env, (double)(uintptr_t)req);
}

static double fh_of (struct fuse_file_info *fi) {
  return fi == NULL ? -1 : (double)fi->fh;
}

/* Calls the JS handler of an op; each runs in its own handle scope so a burst frees as it goes. */
static void call (session_t *s, int op, fuse_req_t req, size_t argc, napi_value *argv) {
  napi_env env = s->env;
  napi_value fn, undefined, result;
  if (req != NULL) {
    const struct fuse_ctx *ctx = fuse_req_ctx(req);
    s->scratch[C_UID] = ctx->uid;
    s->scratch[C_GID] = ctx->gid;
    s->scratch[C_PID] = ctx->pid;
    s->scratch[C_UMASK] = ctx->umask;
  }
  napi_get_reference_value(env, s->handlers[op], &fn);
  napi_get_undefined(env, &undefined);
  if (napi_call_function(env, undefined, fn, argc, argv, &result) == napi_pending_exception) {
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    napi_fatal_exception(env, err);
  }
}

#define SESSION session_t *s = fuse_req_userdata(req); napi_env env = s->env; \
  napi_handle_scope scope; napi_open_handle_scope(env, &scope)
#define CALL(op, ...) do { napi_value argv[] = { req_value(env, req), __VA_ARGS__ }; \
  call(s, OP_##op, req, sizeof argv / sizeof argv[0], argv); napi_close_handle_scope(env, scope); } while (0)

/*
 * FUSE passthrough (Linux 6.9+): an open file's reads, writes and mmaps go to a file of ours
 * (its backing file) inside the kernel, with no request. libfuse 3.14 predates it, so the
 * session does its two parts of the protocol itself, in the I/O functions libfuse calls for
 * every read and write of /dev/fuse (their userdata is the session's): it switches passthrough on in libfuse's answer to INIT when
 * the kernel offers it, and writes the backing file's id into the answer to an open or create.
 */
#define SF_FUSE_PASSTHROUGH_FLAG2 (1u << (37 - 32))
#define SF_FOPEN_PASSTHROUGH (1u << 7)
/* Backing files are on filesystems that stack on nothing (ext4, xfs, ...): the mount is one deep. */
#define SF_MAX_STACK_DEPTH 1
struct sf_backing_map { int32_t fd; uint32_t flags; uint64_t padding; };
#define SF_BACKING_OPEN _IOW(229, 1, struct sf_backing_map)
#define SF_BACKING_CLOSE _IOW(229, 2, uint32_t)

static ssize_t io_read (int fd, void *buf, size_t len, void *userdata) {
  session_t *s = userdata;
  ssize_t n = read(fd, buf, len);
  const struct fuse_in_header *in = buf;
  if (n >= (ssize_t)(sizeof *in + sizeof(struct fuse_init_in)) && in->opcode == FUSE_INIT) {
    const struct fuse_init_in *arg = (const void *)(in + 1);
    s->init_offers_passthrough = (arg->flags & FUSE_INIT_EXT) != 0 && (arg->flags2 & SF_FUSE_PASSTHROUGH_FLAG2) != 0;
  }
  return n;
}

/* The last `len` bytes of a message, when they lie in one iovec. */
static void *tail (struct iovec *iov, int count, size_t len) {
  if (count < 2 || iov[count - 1].iov_len < len) return NULL;
  return (char *)iov[count - 1].iov_base + iov[count - 1].iov_len - len;
}

static ssize_t io_writev (int fd, struct iovec *iov, int count, void *userdata) {
  session_t *s = userdata;
  if (s->init_offers_passthrough && count == 2 && iov[1].iov_len >= sizeof(struct fuse_init_out)) {
    struct fuse_init_out *out = iov[1].iov_base;
    s->init_offers_passthrough = 0;
    if ((out->flags & FUSE_INIT_EXT) != 0 && (out->flags & FUSE_WRITEBACK_CACHE) == 0) {
      out->flags2 |= SF_FUSE_PASSTHROUGH_FLAG2;
      out->unused[0] = SF_MAX_STACK_DEPTH;
      s->passthrough = 1;
    }
  } else if (s->reply_backing > 0) {
    struct fuse_open_out *open = tail(iov, count, sizeof *open);
    if (open != NULL) {
      open->open_flags |= SF_FOPEN_PASSTHROUGH;
      open->padding = (uint32_t)s->reply_backing;
    }
    s->reply_backing = 0;
  }
  return writev(fd, iov, count);
}

static const struct fuse_custom_io io = { .read = io_read, .writev = io_writev };

/*
 * What libfuse 3 would switch on by default and we do not want: the kernel keeps clearing setuid
 * bits on write itself (the overlay does not), truncates by SETATTR before an O_TRUNC open (the
 * path every test knows), and asks for no attributes on reads of files it cannot cache; requests
 * are read with plain reads into our buffer, never spliced.
 */
static const unsigned UNWANTED = FUSE_CAP_HANDLE_KILLPRIV | FUSE_CAP_ATOMIC_O_TRUNC | FUSE_CAP_AUTO_INVAL_DATA |
  FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE;

static void ll_init (void *data, struct fuse_conn_info *conn) {
  session_t *s = data;
  conn->want &= ~UNWANTED;
  /*
   * POSIX ACLs take part in permission checks, as under kernel overlayfs; the kernel fetches them
   * through getxattr and keeps them. Keeping modes and ACLs in step, and default ACLs inherited,
   * is left to the filesystems under the upper, where every change lands.
   */
  if (conn->capable & FUSE_CAP_POSIX_ACL) conn->want |= FUSE_CAP_POSIX_ACL;
  /* The umask arrives with the request and JS applies it, unless the directory has a default ACL. */
  if (conn->capable & FUSE_CAP_DONT_MASK) conn->want |= FUSE_CAP_DONT_MASK;
  napi_handle_scope scope;
  napi_open_handle_scope(s->env, &scope);
  call(s, OP_init, NULL, 0, NULL);
  napi_close_handle_scope(s->env, scope);
}

static void ll_lookup (fuse_req_t req, fuse_ino_t parent, const char *name) {
  SESSION;
  CALL(lookup, num(env, parent), str(env, name));
}

static void forget_one (session_t *s, fuse_ino_t ino, uint64_t nlookup) {
  napi_env env = s->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value argv[] = { num(env, ino), num(env, nlookup) };
  call(s, OP_forget, NULL, 2, argv);
  napi_close_handle_scope(env, scope);
}

static void ll_forget (fuse_req_t req, fuse_ino_t ino, unsigned long nlookup) {
  forget_one(fuse_req_userdata(req), ino, nlookup);
  fuse_reply_none(req);
}

static void ll_forget_multi (fuse_req_t req, size_t count, struct fuse_forget_data *forgets) {
  for (size_t i = 0; i < count; i++) forget_one(fuse_req_userdata(req), forgets[i].ino, forgets[i].nlookup);
  fuse_reply_none(req);
}

static void ll_getattr (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  SESSION;
  CALL(getattr, num(env, ino), num(env, fh_of(fi)));
}

static void ll_setattr (fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi) {
  SESSION;
  CALL(setattr, num(env, ino), num(env, to_set), num(env, attr->st_mode), num(env, attr->st_uid),
       num(env, attr->st_gid), num(env, attr->st_size), num(env, attr->st_atim.tv_sec),
       num(env, attr->st_atim.tv_nsec), num(env, attr->st_mtim.tv_sec), num(env, attr->st_mtim.tv_nsec),
       num(env, fh_of(fi)));
}

static void ll_readlink (fuse_req_t req, fuse_ino_t ino) {
  SESSION;
  CALL(readlink, num(env, ino));
}

static void ll_mknod (fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev) {
  SESSION;
  CALL(mknod, num(env, parent), str(env, name), num(env, mode), num(env, rdev));
}

static void ll_mkdir (fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode) {
  SESSION;
  CALL(mkdir, num(env, parent), str(env, name), num(env, mode));
}

static void ll_unlink (fuse_req_t req, fuse_ino_t parent, const char *name) {
  SESSION;
  CALL(unlink, num(env, parent), str(env, name));
}

static void ll_rmdir (fuse_req_t req, fuse_ino_t parent, const char *name) {
  SESSION;
  CALL(rmdir, num(env, parent), str(env, name));
}

static void ll_symlink (fuse_req_t req, const char *target, fuse_ino_t parent, const char *name) {
  SESSION;
  CALL(symlink, num(env, parent), str(env, name), str(env, target));
}

static void ll_rename (fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent, const char *newname, unsigned int flags) {
  SESSION;
  CALL(rename, num(env, parent), str(env, name), num(env, newparent), str(env, newname), num(env, flags));
}

static void ll_link (fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname) {
  SESSION;
  CALL(link, num(env, ino), num(env, newparent), str(env, newname));
}

static void ll_open (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  SESSION;
  CALL(open, num(env, ino), num(env, fi->flags));
}

static void ll_read (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  SESSION;
  CALL(read, num(env, ino), num(env, size), num(env, off), num(env, fi->fh));
}

/*
 * The data is lent, not copied: a view of the receive buffer, which the next request overwrites.
 * Copying 128 KiB into a new Buffer per write cost a third of the sequential write rate.
 */
static napi_value lent (napi_env env, const char *data, size_t len) {
  napi_value r;
  napi_create_external_buffer(env, len, (void *)data, NULL, NULL, &r);
  return r;
}

static void ll_write (fuse_req_t req, fuse_ino_t ino, const char *data, size_t size, off_t off, struct fuse_file_info *fi) {
  SESSION;
  CALL(write, num(env, ino), lent(env, data, size), num(env, off), num(env, fi->fh));
}

static void ll_release (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  SESSION;
  CALL(release, num(env, ino), num(env, fi->fh));
}

static void ll_fsync (fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi) {
  SESSION;
  CALL(fsync, num(env, ino), num(env, datasync), num(env, fi->fh));
}

static void ll_opendir (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  SESSION;
  CALL(opendir, num(env, ino));
}

static void ll_readdir (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  SESSION;
  CALL(readdir, num(env, ino), num(env, size), num(env, off), num(env, fi->fh));
}

/* Offered to the kernel by libfuse because it is here (READDIRPLUS_AUTO: when lookups follow listings). */
static void ll_readdirplus (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  SESSION;
  CALL(readdirplus, num(env, ino), num(env, size), num(env, off), num(env, fi->fh));
}

static void ll_releasedir (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  SESSION;
  CALL(releasedir, num(env, ino), num(env, fi->fh));
}

static void ll_statfs (fuse_req_t req, fuse_ino_t ino) {
  SESSION;
  CALL(statfs, num(env, ino));
}

static void ll_setxattr (fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size, int flags) {
  SESSION;
  CALL(setxattr, num(env, ino), str(env, name), bytes(env, value, size), num(env, flags));
}

static void ll_getxattr (fuse_req_t req, fuse_ino_t ino, const char *name, size_t size) {
  SESSION;
  CALL(getxattr, num(env, ino), str(env, name), num(env, size));
}

static void ll_listxattr (fuse_req_t req, fuse_ino_t ino, size_t size) {
  SESSION;
  CALL(listxattr, num(env, ino), num(env, size));
}

static void ll_removexattr (fuse_req_t req, fuse_ino_t ino, const char *name) {
  SESSION;
  CALL(removexattr, num(env, ino), str(env, name));
}

static void ll_create (fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi) {
  SESSION;
  CALL(create, num(env, parent), str(env, name), num(env, mode), num(env, fi->flags));
}

static void ll_fallocate (fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length, struct fuse_file_info *fi) {
  SESSION;
  CALL(fallocate, num(env, ino), num(env, mode), num(env, offset), num(env, length), num(env, fi->fh));
}

/* The kernel copies through its page cache itself when the answer is EOPNOTSUPP or EXDEV. */
static void ll_copy_file_range (fuse_req_t req, fuse_ino_t ino_in, off_t off_in, struct fuse_file_info *fi_in,
                                fuse_ino_t ino_out, off_t off_out, struct fuse_file_info *fi_out, size_t len, int flags) {
  SESSION;
  CALL(copyFileRange, num(env, fi_in->fh), num(env, off_in), num(env, fi_out->fh), num(env, off_out), num(env, len));
}

/* The kernel asks only for SEEK_DATA and SEEK_HOLE; it answers the other whences itself. */
static void ll_lseek (fuse_req_t req, fuse_ino_t ino, off_t off, int whence, struct fuse_file_info *fi) {
  SESSION;
  CALL(lseek, num(env, ino), num(env, off), num(env, whence), num(env, fi->fh));
}

static const struct fuse_lowlevel_ops ll_ops = {
  .init = ll_init,
  .lookup = ll_lookup,
  .forget = ll_forget,
  .forget_multi = ll_forget_multi,
  .getattr = ll_getattr,
  .setattr = ll_setattr,
  .readlink = ll_readlink,
  .mknod = ll_mknod,
  .mkdir = ll_mkdir,
  .unlink = ll_unlink,
  .rmdir = ll_rmdir,
  .symlink = ll_symlink,
  .rename = ll_rename,
  .link = ll_link,
  .open = ll_open,
  .read = ll_read,
  .write = ll_write,
  .release = ll_release,
  .fsync = ll_fsync,
  .opendir = ll_opendir,
  .readdir = ll_readdir,
  .readdirplus = ll_readdirplus,
  .releasedir = ll_releasedir,
  .statfs = ll_statfs,
  .setxattr = ll_setxattr,
  .getxattr = ll_getxattr,
  .listxattr = ll_listxattr,
  .removexattr = ll_removexattr,
  .create = ll_create,
  .fallocate = ll_fallocate,
  .copy_file_range = ll_copy_file_range,
  .lseek = ll_lseek,
};

static void end_session (session_t *s);

static void stop_polling (session_t *s) {
  if (!s->polling) return;
  s->polling = 0;
  uv_poll_stop(&s->poll);
}

/*
 * One request per wake-up: reading on until EAGAIN would cost a syscall per request, and libuv
 * comes straight back while more are queued. The callback scope runs the promise jobs the
 * handler started before libuv polls again.
 */
static void on_readable (uv_poll_t *handle, int status, int events) {
  session_t *s = handle->data;
  napi_env env = s->env;
  napi_handle_scope scope;
  napi_callback_scope cb_scope;
  napi_value resource;
  int ended = status < 0;
  napi_open_handle_scope(env, &scope);
  napi_get_reference_value(env, s->resource, &resource);
  napi_open_callback_scope(env, resource, s->async, &cb_scope);
  while (!ended) {
    int res = fuse_session_receive_buf(s->se, &s->buf);
    if (res == -EINTR) continue;
    if (res <= 0 && res != -EAGAIN) ended = 1;
    else if (res > 0 && fuse_session_exited(s->se)) ended = 1;
    else if (res > 0) {
      s->dispatching = 1;
      fuse_session_process_buf(s->se, &s->buf);
      s->dispatching = 0;
    }
    break;
  }
  if (ended && s->polling) {
    stop_polling(s);
    call(s, OP_exit, NULL, 0, NULL);
  }
  napi_close_callback_scope(env, cb_scope);
  napi_close_handle_scope(env, scope);
  if (s->unmount_pending) end_session(s);
}

static void free_session (session_t *s) {
  free(s->buf.mem);
  free(s);
}

static void on_closed (uv_handle_t *handle) {
  session_t *s = handle->data;
  s->handle_closed = 1;
  if (s->released) free_session(s);
}

/* A session still mounted when JS drops it is left as it is: the mount must outlive no handler. */
static void on_released (napi_env env, void *data, void *hint) {
  session_t *s = data;
  s->released = 1;
  if (s->handle_closed) free_session(s);
}

static int get_args (napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < want) {
    napi_throw_type_error(env, NULL, "missing arguments");
    return 0;
  }
  return 1;
}

/* NULL, with a TypeError thrown, for anything but a string. */
static char *get_string (napi_env env, napi_value v) {
  size_t len;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "a string is expected");
    return NULL;
  }
  char *out = malloc(len + 1);
  napi_get_value_string_utf8(env, v, out, len + 1, &len);
  return out;
}

static void fuse_args_of (struct fuse_args *args, char *opts) {
  memset(args, 0, sizeof *args);
  fuse_opt_add_arg(args, "stratafs");
  if (opts[0] != '\0') {
    fuse_opt_add_arg(args, "-o");
    fuse_opt_add_arg(args, opts);
  }
}

static napi_value mount_error (napi_env env, const char *message, int code) {
  napi_value err, errno_value;
  napi_create_error(env, NULL, str(env, message), &err);
  napi_create_int32(env, code, &errno_value);
  napi_set_named_property(env, err, "errno", errno_value);
  napi_throw(env, err);
  return NULL;
}

/*
 * libfuse says why it refused a mount on stderr only; while mounting, its last words are kept for
 * the error instead (what a server in the background prints reaches no one).
 */
static char last_words[512];

static void keep_last_words (enum fuse_log_level level, const char *fmt, va_list ap) {
  vsnprintf(last_words, sizeof last_words, fmt, ap);
  size_t n = strlen(last_words);
  while (n > 0 && last_words[n - 1] == '\n') last_words[--n] = '\0';
}

/* mount(mountpoint, options, handlers, scratch) → session */
static napi_value mount (napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!get_args(env, info, 4, argv)) return NULL;
  napi_value fns[OP_COUNT];
  for (int i = 0; i < OP_COUNT; i++) {
    napi_valuetype t = napi_undefined;
    if (napi_get_named_property(env, argv[2], op_names[i], &fns[i]) != napi_ok) return NULL;
    napi_typeof(env, fns[i], &t);
    if (t != napi_function) {
      napi_throw_type_error(env, NULL, op_names[i]);
      return NULL;
    }
  }
  double *scratch;
  size_t scratch_len;
  napi_typedarray_type type;
  if (napi_get_typedarray_info(env, argv[3], &type, &scratch_len, (void **)&scratch, NULL, NULL) != napi_ok ||
      type != napi_float64_array || scratch_len < SCRATCH_LEN) {
    napi_throw_type_error(env, NULL, "scratch must be a Float64Array of 32");
    return NULL;
  }
  char *mountpoint = get_string(env, argv[0]);
  char *opts = mountpoint == NULL ? NULL : get_string(env, argv[1]);
  if (opts == NULL) {
    free(mountpoint);
    return NULL;
  }

  struct fuse_args args;
  fuse_args_of(&args, opts);
  session_t *s = calloc(1, sizeof *s);
  s->env = env;
  s->scratch = scratch;
  last_words[0] = '\0';
  fuse_set_log_func(keep_last_words);
  s->se = fuse_session_new(&args, &ll_ops, sizeof ll_ops, s);
  int mounted = s->se != NULL && fuse_session_mount(s->se, mountpoint) == 0;
  fuse_set_log_func(NULL);
  fuse_opt_free_args(&args);
  free(opts);
  free(mountpoint);
  if (!mounted) {
    int refused = s->se != NULL;
    if (refused) fuse_session_destroy(s->se);
    free_session(s);
    if (last_words[0] == '\0') strcpy(last_words, refused ? "the kernel refused the mount" : "libfuse refused the options");
    return mount_error(env, last_words, refused ? EPERM : EINVAL);
  }

  s->fd = fuse_session_fd(s->se);
  fuse_session_custom_io(s->se, &io, s->fd);
  for (int i = 0; i < OP_COUNT; i++) napi_create_reference(env, fns[i], 1, &s->handlers[i]);
  napi_create_reference(env, argv[3], 1, &s->scratch_ref);
  napi_create_reference(env, argv[2], 1, &s->resource);
  napi_async_init(env, argv[2], str(env, "stratafs:fuse"), &s->async);
  fcntl(s->fd, F_SETFL, fcntl(s->fd, F_GETFL) | O_NONBLOCK);
  uv_loop_t *loop;
  napi_get_uv_event_loop(env, &loop);
  uv_poll_init(loop, &s->poll, s->fd);
  s->poll.data = s;
  s->polling = 1;
  uv_poll_start(&s->poll, UV_READABLE, on_readable);
  napi_value out;
  napi_create_external(env, s, on_released, NULL, &out);
  return out;
}

static session_t *session_of (napi_env env, napi_value v) {
  session_t *s = NULL;
  napi_get_value_external(env, v, (void **)&s);
  return s;
}

/* Detaches the mount (as fusermount -uz) and ends the session; replies still owed are dropped. */
static void end_session (session_t *s) {
  napi_env env = s->env;
  s->unmount_pending = 0;
  stop_polling(s);
  fuse_session_unmount(s->se);
  fuse_session_destroy(s->se);
  s->se = NULL;
  for (int i = 0; i < OP_COUNT; i++) napi_delete_reference(env, s->handlers[i]);
  napi_delete_reference(env, s->scratch_ref);
  napi_delete_reference(env, s->resource);
  napi_async_destroy(env, s->async);
  uv_close((uv_handle_t *)&s->poll, on_closed);
}

/* unmount(session): once; from inside a request's handler it happens when the handler returns. */
static napi_value unmount (napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  session_t *s = session_of(env, argv[0]);
  if (s == NULL || s->se == NULL || s->unmount_pending) return NULL;
  if (s->dispatching) s->unmount_pending = 1;
  else end_session(s);
  return NULL;
}

/* invalidateAttr(session, node): the kernel drops the attributes it caches for a node. */
static napi_value invalidate_attr (napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  session_t *s = session_of(env, argv[0]);
  double node = 0;
  napi_get_value_double(env, argv[1], &node);
  if (s != NULL && s->se != NULL) fuse_lowlevel_notify_inval_inode(s->se, (fuse_ino_t)node, -1, 0);
  return NULL;
}

static fuse_req_t req_arg (napi_env env, napi_value v) {
  double d = 0;
  napi_get_value_double(env, v, &d);
  return (fuse_req_t)(uintptr_t)d;
}

static double num_arg (napi_env env, napi_value v) {
  double d = 0;
  napi_get_value_double(env, v, &d);
  return d;
}

static session_t *session_of_req (fuse_req_t req) {
  return fuse_req_userdata(req);
}

static void attr_of (const double *a, struct stat *st) {
  memset(st, 0, sizeof *st);
  st->st_ino = (ino_t)a[A_INO];
  st->st_mode = (mode_t)a[A_MODE];
  st->st_nlink = (nlink_t)a[A_NLINK];
  st->st_uid = (uid_t)a[A_UID];
  st->st_gid = (gid_t)a[A_GID];
  st->st_rdev = (dev_t)a[A_RDEV];
  st->st_size = (off_t)a[A_SIZE];
  st->st_blocks = (blkcnt_t)a[A_BLOCKS];
  st->st_blksize = (blksize_t)a[A_BLKSIZE];
  st->st_atim.tv_sec = (time_t)a[A_ATIME];
  st->st_atim.tv_nsec = (long)a[A_ATIME_NS];
  st->st_mtim.tv_sec = (time_t)a[A_MTIME];
  st->st_mtim.tv_nsec = (long)a[A_MTIME_NS];
  st->st_ctim.tv_sec = (time_t)a[A_CTIME];
  st->st_ctim.tv_nsec = (long)a[A_CTIME_NS];
}

/* An entry from the scratch attributes; node 0 is a negative entry the kernel keeps for entry_timeout. */
static void entry_of (napi_env env, napi_value *argv, struct fuse_entry_param *e) {
  fuse_req_t req = req_arg(env, argv[0]);
  memset(e, 0, sizeof *e);
  e->ino = (fuse_ino_t)num_arg(env, argv[1]);
  /* Node ids are never reused: one generation (the READDIRPLUS records in JS say the same). */
  e->generation = 1;
  e->entry_timeout = num_arg(env, argv[2]);
  e->attr_timeout = num_arg(env, argv[3]);
  if (e->ino != 0) attr_of(session_of_req(req)->scratch, &e->attr);
}

/* Open flags crossing from JS: bit 0 direct_io, bit 1 keep_cache, bit 2 cache_readdir. */
static void file_info_of (double fh, double flags, struct fuse_file_info *fi) {
  memset(fi, 0, sizeof *fi);
  fi->fh = (uint64_t)fh;
  fi->direct_io = ((int)flags & 1) != 0;
  fi->keep_cache = ((int)flags & 2) != 0;
  fi->cache_readdir = ((int)flags & 4) != 0;
}

static napi_value reply_err (napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  fuse_reply_err(req_arg(env, argv[0]), (int)num_arg(env, argv[1]));
  return NULL;
}

/* replyEntry(req, node, entryTimeout, attrTimeout) */
static napi_value reply_entry (napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!get_args(env, info, 4, argv)) return NULL;
  struct fuse_entry_param e;
  entry_of(env, argv, &e);
  fuse_reply_entry(req_arg(env, argv[0]), &e);
  return NULL;
}

/* The open or create answer about to be sent hands the kernel this backing file (0: none). */
static void reply_with_backing (fuse_req_t req, double backing) {
  if (backing > 0) session_of_req(req)->reply_backing = (int32_t)backing;
}

/* replyCreate(req, node, entryTimeout, attrTimeout, fh, openFlags, backing) */
static napi_value reply_create (napi_env env, napi_callback_info info) {
  napi_value argv[7];
  if (!get_args(env, info, 7, argv)) return NULL;
  fuse_req_t req = req_arg(env, argv[0]);
  struct fuse_entry_param e;
  struct fuse_file_info fi;
  entry_of(env, argv, &e);
  file_info_of(num_arg(env, argv[4]), num_arg(env, argv[5]), &fi);
  reply_with_backing(req, num_arg(env, argv[6]));
  fuse_reply_create(req, &e, &fi);
  return NULL;
}

/* replyAttr(req, attrTimeout) */
static napi_value reply_attr (napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  fuse_req_t req = req_arg(env, argv[0]);
  struct stat st;
  attr_of(session_of_req(req)->scratch, &st);
  fuse_reply_attr(req, &st, num_arg(env, argv[1]));
  return NULL;
}

/* replyOpen(req, fh, openFlags, backing) */
static napi_value reply_open (napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!get_args(env, info, 4, argv)) return NULL;
  fuse_req_t req = req_arg(env, argv[0]);
  struct fuse_file_info fi;
  file_info_of(num_arg(env, argv[1]), num_arg(env, argv[2]), &fi);
  reply_with_backing(req, num_arg(env, argv[3]));
  fuse_reply_open(req, &fi);
  return NULL;
}

/*
 * backingOpen(session, fd): registers an open file as a backing file; its id (> 0), or -errno.
 * -EOPNOTSUPP when the kernel did not take passthrough; the kernel answers EPERM without
 * CAP_SYS_ADMIN and ELOOP for a file on a stacked filesystem.
 */
static napi_value backing_open (napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  session_t *s = session_of(env, argv[0]);
  if (s == NULL || s->se == NULL || !s->passthrough) return num(env, -EOPNOTSUPP);
  struct sf_backing_map map = { .fd = (int32_t)num_arg(env, argv[1]) };
  int id = ioctl(s->fd, SF_BACKING_OPEN, &map);
  return num(env, id < 0 ? -errno : id);
}

/* backingClose(session, id): the kernel's files opened through it keep it as long as they need. */
static napi_value backing_close (napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  session_t *s = session_of(env, argv[0]);
  uint32_t id = (uint32_t)num_arg(env, argv[1]);
  if (s != NULL && s->se != NULL) ioctl(s->fd, SF_BACKING_CLOSE, &id);
  return NULL;
}

/* replyBuf(req, bytes, length) */
static napi_value reply_buf (napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (!get_args(env, info, 3, argv)) return NULL;
  void *data;
  size_t len;
  CHECK(napi_get_buffer_info(env, argv[1], &data, &len));
  size_t want = (size_t)num_arg(env, argv[2]);
  fuse_reply_buf(req_arg(env, argv[0]), data, want < len ? want : len);
  return NULL;
}

/* replyWrite(req, count), replyXattr(req, size), replyLseek(req, offset): replies that carry one number. */
#define SIZE_REPLY(name, reply) \
  static napi_value name (napi_env env, napi_callback_info info) { \
    napi_value argv[2]; \
    if (!get_args(env, info, 2, argv)) return NULL; \
    reply(req_arg(env, argv[0]), (size_t)num_arg(env, argv[1])); \
    return NULL; \
  }

SIZE_REPLY(reply_write, fuse_reply_write)
SIZE_REPLY(reply_xattr, fuse_reply_xattr)
SIZE_REPLY(reply_lseek, fuse_reply_lseek)

static napi_value reply_readlink (napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  char *target = get_string(env, argv[1]);
  if (target == NULL) return NULL;
  fuse_reply_readlink(req_arg(env, argv[0]), target);
  free(target);
  return NULL;
}


static napi_value reply_statfs (napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  fuse_req_t req = req_arg(env, argv[0]);
  const double *f = session_of_req(req)->scratch;
  struct statvfs st;
  memset(&st, 0, sizeof st);
  st.f_bsize = (unsigned long)f[F_BSIZE];
  st.f_frsize = (unsigned long)f[F_FRSIZE];
  st.f_blocks = (fsblkcnt_t)f[F_BLOCKS];
  st.f_bfree = (fsblkcnt_t)f[F_BFREE];
  st.f_bavail = (fsblkcnt_t)f[F_BAVAIL];
  st.f_files = (fsfilcnt_t)f[F_FILES];
  st.f_ffree = (fsfilcnt_t)f[F_FFREE];
  st.f_favail = (fsfilcnt_t)f[F_FAVAIL];
  st.f_namemax = (unsigned long)f[F_NAMEMAX];
  fuse_reply_statfs(req, &st);
  return NULL;
}

#define EXPORT(name, fn) do { napi_value v; napi_create_function(env, name, NAPI_AUTO_LENGTH, fn, NULL, &v); \
  napi_set_named_property(env, exports, name, v); } while (0)

static napi_value init_module (napi_env env, napi_value exports) {
  EXPORT("mount", mount);
  EXPORT("unmount", unmount);
  EXPORT("invalidateAttr", invalidate_attr);
  EXPORT("backingOpen", backing_open);
  EXPORT("backingClose", backing_close);
  EXPORT("replyErr", reply_err);
  EXPORT("replyEntry", reply_entry);
  EXPORT("replyCreate", reply_create);
  EXPORT("replyAttr", reply_attr);
  EXPORT("replyOpen", reply_open);
  EXPORT("replyBuf", reply_buf);
  EXPORT("replyWrite", reply_write);
  EXPORT("replyReadlink", reply_readlink);
  EXPORT("replyXattr", reply_xattr);
  EXPORT("replyLseek", reply_lseek);
  EXPORT("replyStatfs", reply_statfs);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init_module)

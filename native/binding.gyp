{
  "targets": [{
    "target_name": "fuse_session",
    "cflags": ["<!@(pkg-config --cflags fuse)", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
    "libraries": ["<!@(pkg-config --libs fuse)"],
    "sources": ["fuse-session.c"]
  }]
}

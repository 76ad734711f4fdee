{
  "targets": [{
    "target_name": "fuse_session",
    "cflags": ["<!@(pkg-config --cflags fuse3)", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
    "libraries": ["<!@(pkg-config --libs fuse3)"],
    "sources": ["fuse-session.c"]
  }, {
    "target_name": "dir_stats",
    "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
    "sources": ["dir-stats.c"]
  }]
}

/* Small helpers of the shim: atomic state files and /proc parsing. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "shim.h"

int write_atomic(int dirfd, const char *name, const char *data) {
  char tmp[256];
  snprintf(tmp, sizeof(tmp), "%s.tmp", name);
  int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return -1;
  size_t len = strlen(data), off = 0;
  while (off < len) {
    ssize_t n = write(fd, data + off, len - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int e = errno;
      close(fd);
      errno = e;
      return -1;
    }
    off += (size_t)n;
  }
  if (close(fd) < 0) return -1;
  return renameat(dirfd, tmp, dirfd, name);
}

/* Reads /proc/<pid>/stat and returns a pointer just after the last ')' (the comm may hold any
 * character, including ')' and spaces), i.e. at " <state> <ppid> ...". */
static const char *stat_fields(pid_t pid, char *buf, size_t len) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NULL;
  ssize_t n = read(fd, buf, len - 1);
  close(fd);
  if (n <= 0) return NULL;
  buf[n] = '\0';
  const char *p = strrchr(buf, ')');
  return p ? p + 1 : NULL;
}

/* Returns the 1-based field number idx (3 = state) of /proc/<pid>/stat as an unsigned number. */
static int stat_field(pid_t pid, int idx, unsigned long long *out) {
  char buf[1024];
  const char *p = stat_fields(pid, buf, sizeof(buf));
  if (!p) return -1;
  for (int field = 3; field < idx; field++) {
    p = strchr(p + 1, ' ');
    if (!p) return -1;
  }
  char *end;
  errno = 0;
  *out = strtoull(p + 1, &end, 10);
  return errno || end == p + 1 ? -1 : 0;
}

unsigned long long proc_starttime(pid_t pid) {
  unsigned long long v;
  return stat_field(pid, 22, &v) < 0 ? 0 : v;
}

pid_t proc_ppid(pid_t pid) {
  unsigned long long v;
  return stat_field(pid, 4, &v) < 0 ? -1 : (pid_t)v;
}

int proc_child_in_own_group(pid_t pid) {
  char path[96], buf[64], stat[1024];
  const char *fields = stat_fields(pid, stat, sizeof(stat));
  if (!fields || fields[1] == 'Z' || fields[1] == 'X') return -1;
  snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)pid, (int)pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0) return n == 0 ? 0 : -1;
  buf[n] = '\0';
  pid_t child = (pid_t)strtol(buf, NULL, 10);
  unsigned long long pgrp;
  if (child <= 0 || stat_field(child, 5, &pgrp) < 0) return 0;
  return (pid_t)pgrp == child ? 1 : 0;
}

long long read_oom_kill(const char *path) {
  char buf[4096];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = '\0';
  for (char *line = buf; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
    if (strncmp(line, "oom_kill ", 9) == 0) return strtoll(line + 9, NULL, 10);
  return -1;
}

long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

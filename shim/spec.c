/* Parsing of the job spec file: NUL-separated key=value records. Kept strict: unknown keys,
 * missing '=' or a missing final NUL are errors, and numbers must parse completely. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shim.h"

#define SPEC_MAX (16u << 20)

static char *read_all(int dirfd, size_t *len, char *err, size_t errlen) {
  int fd = openat(dirfd, "spec", O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) < 0) {
    snprintf(err, errlen, "open spec: %s", strerror(errno));
    if (fd >= 0) close(fd);
    return NULL;
  }
  if (st.st_size <= 0 || (size_t)st.st_size > SPEC_MAX) {
    snprintf(err, errlen, "spec size %lld out of range", (long long)st.st_size);
    close(fd);
    return NULL;
  }
  char *buf = malloc((size_t)st.st_size);
  size_t off = 0;
  while (buf && off < (size_t)st.st_size) {
    ssize_t n = read(fd, buf + off, (size_t)st.st_size - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    off += (size_t)n;
  }
  close(fd);
  if (!buf || off != (size_t)st.st_size || buf[off - 1] != '\0') {
    snprintf(err, errlen, "spec unreadable or not NUL-terminated");
    free(buf);
    return NULL;
  }
  *len = off;
  return buf;
}

static int parse_ulong(const char *v, unsigned long max, unsigned long *out) {
  char *end;
  errno = 0;
  unsigned long x = strtoul(v, &end, 10);
  if (errno || end == v || *end || v[0] == '-' || x > max) return -1;
  *out = x;
  return 0;
}

static size_t count_key(const char *buf, size_t len, const char *key) {
  size_t n = 0, klen = strlen(key);
  for (size_t off = 0; off < len; off += strlen(buf + off) + 1)
    if (strncmp(buf + off, key, klen) == 0 && buf[off + klen] == '=') n++;
  return n;
}

static int alloc_lists(struct spec *s, size_t len) {
  s->args = calloc(count_key(s->buf, len, "arg") + 1, sizeof(char *));
  s->env = calloc(count_key(s->buf, len, "env") + 1, sizeof(char *));
  s->cgroups = calloc(count_key(s->buf, len, "cgroup") + 1, sizeof(char *));
  s->cmd = calloc(count_key(s->buf, len, "cmd") + 1, sizeof(char *));
  s->groups = calloc(count_key(s->buf, len, "group") + 1, sizeof(gid_t));
  return s->args && s->env && s->cgroups && s->cmd && s->groups ? 0 : -1;
}

static int set_id(const char *v, unsigned int *out) {
  unsigned long x;
  if (parse_ulong(v, 0xfffffffeUL, &x) < 0) return -1;
  *out = (unsigned int)x;
  return 0;
}

static int apply(struct spec *s, const char *key, char *v) {
  unsigned long x;
  if (!strcmp(key, "v")) return strcmp(v, "1") ? -1 : 0;
  if (!strcmp(key, "tini")) s->tini = v;
  else if (!strcmp(key, "hostname")) s->hostname = v;
  else if (!strcmp(key, "cwd")) s->cwd = v;
  else if (!strcmp(key, "oom")) s->oom_file = v;
  else if (!strcmp(key, "pidfile")) s->pidfile = v;
  else if (!strcmp(key, "uid")) return set_id(v, &s->uid);
  else if (!strcmp(key, "gid")) return set_id(v, &s->gid);
  else if (!strcmp(key, "stdin")) {
    if (parse_ulong(v, 1, &x) < 0) return -1;
    s->stdin_fifo = (int)x;
  } else if (!strcmp(key, "hold")) {
    if (parse_ulong(v, 1, &x) < 0) return -1;
    s->hold = (int)x;
  } else if (!strcmp(key, "iouring")) {
    if (parse_ulong(v, 1, &x) < 0) return -1;
    s->io_uring = (int)x;
  } else if (!strcmp(key, "mountproc")) {
    if (parse_ulong(v, 1, &x) < 0) return -1;
    s->mount_proc = (int)x;
  } else if (!strcmp(key, "group")) return set_id(v, &s->groups[s->ngroups++]);
  else if (!strcmp(key, "arg")) s->args[s->nargs++] = v;
  else if (!strcmp(key, "env")) s->env[s->nenv++] = v;
  else if (!strcmp(key, "cgroup")) s->cgroups[s->ncgroups++] = v;
  else if (!strcmp(key, "cmd")) s->cmd[s->ncmd++] = v;
  else return -1;
  return 0;
}

int spec_read(int dirfd, struct spec *s, char *err, size_t errlen) {
  size_t len;
  memset(s, 0, sizeof(*s));
  s->mount_proc = 1;
  s->io_uring = 1;
  s->buf = read_all(dirfd, &len, err, errlen);
  if (!s->buf) return -1;
  if (alloc_lists(s, len) < 0) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  for (size_t off = 0; off < len;) {
    char *rec = s->buf + off, *eq = strchr(rec, '=');
    off += strlen(rec) + 1;
    if (!eq) {
      snprintf(err, errlen, "spec record without '='");
      return -1;
    }
    *eq = '\0';
    if (apply(s, rec, eq + 1) < 0) {
      snprintf(err, errlen, "bad spec record '%s'", rec);
      return -1;
    }
  }
  return 0;
}

/* ssi-shim: per-job supervisor. Shared declarations. See ssi-shim.c for the protocol. */
#ifndef SSI_SHIM_H
#define SSI_SHIM_H

#include <stddef.h>
#include <sys/types.h>

/* Job spec read from <jobDir>/spec: NUL-terminated "key=value" records written by the daemon.
 * Repeatable keys (arg, env, group, cgroup, cmd) keep their order. */
struct spec {
  const char *tini;      /* absolute path of tini (run mode) */
  const char *hostname;  /* may be NULL: keep the host's name in the new UTS namespace */
  const char *cwd;       /* run mode: working directory, entered after dropping privileges */
  const char *oom_file;  /* may be NULL: memory.oom_control (v1) or memory.events (v2) */
  const char *pidfile;   /* restore mode: file where the restore command writes the root pid */
  uid_t uid;
  gid_t gid;
  int mount_proc;        /* 1 (default): new mount namespace with a /proc of the job's PID ns */
  int stdin_fifo;        /* 1: stdin is the FIFO <jobDir>/stdin, else /dev/null */
  int io_uring;          /* 1 (default): the job may use io_uring; 0: io_uring_setup fails (seccomp) */
  int hold;              /* restore mode: 1 = fd 0 is the daemon's socket; "go" keeps the job, EOF kills it */
  size_t nargs, nenv, ngroups, ncgroups, ncmd;
  char **args;           /* NULL-terminated */
  char **env;            /* NULL-terminated */
  char **cgroups;        /* cgroup.procs files the job joins before exec */
  char **cmd;            /* restore mode: NULL-terminated command */
  gid_t *groups;
  char *buf;             /* owns every string above */
};

/* Parses the spec file at dirfd/"spec"; on error returns -1 with a message in err. */
int spec_read(int dirfd, struct spec *s, char *err, size_t errlen);

/* Writes data to dirfd/name atomically (name.tmp + rename). Returns 0 or -1 (errno set). */
int write_atomic(int dirfd, const char *name, const char *data);

/* Start time of pid in clock ticks since boot (field 22 of /proc/<pid>/stat), 0 on error. */
unsigned long long proc_starttime(pid_t pid);

/* Parent pid of pid from /proc/<pid>/stat, -1 on error. */
pid_t proc_ppid(pid_t pid);

/* 1 if pid's first child (/proc/<pid>/task/<pid>/children: CONFIG_PROC_CHILDREN, which CRIU needs
 * too) leads its own process group, 0 if not yet, -1 if pid is gone, a zombie, or the kernel lacks
 * the file. */
int proc_child_in_own_group(pid_t pid);

/* Value of the "oom_kill N" line of a memory.oom_control / memory.events file, -1 if unknown. */
long long read_oom_kill(const char *path);

/* Installs the job's seccomp filter that makes io_uring_setup fail with ENOSYS (seccomp.c).
 * Needs no_new_privs or CAP_SYS_ADMIN. Returns 0 or -1 (errno set). */
int block_io_uring(void);

/* Restore mode, hold=1: kills root unless the daemon writes "go" on fd 0 before closing it (hold.c). */
void hold_until_adopted(pid_t root);

/* Current wall-clock time in milliseconds since the epoch. */
long long now_ms(void);

#endif

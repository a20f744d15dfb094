/* ssi-shim: the per-job supervisor (in the spirit of conmon / containerd-shim).
 *
 *   ssi-shim run <jobDir>       start the job described by <jobDir>/spec
 *   ssi-shim restore <jobDir>   run the restore command of <jobDir>/spec (e.g. `criu restore -d
 *                               --pidfile F`) as a child subreaper and supervise the restored root
 *
 * The daemon spawns the shim with fd 1 a pipe. The shim forks once more (so the daemon is not its
 * parent and a daemon restart neither kills nor orphans-into-the-daemon the job), starts the job,
 * writes <jobDir>/pid ("pid= start= shim= shimstart=", start = /proc/<pid>/stat starttime) and
 * then reports one line on fd 1: "ok <rootPid> <rootStart> <shimPid> <shimStart>" or
 * "error <message>", and closes it.
 * Its own diagnostics go to <jobDir>/shim.log. When the job's root (tini; the restored root in
 * restore mode) ends, the shim writes <jobDir>/exit atomically ("code=N" or "signal=N", "core=",
 * "oom_kill=N" read from the cgroup, "time=<ms since epoch>"; "error=<msg>" if the job never
 * started) and exits.
 *
 * Run mode: the job gets new PID, IPC and UTS namespaces; its pid 1 is tini (-g: forward signals
 * to the job's process group), which is session leader inside the namespace (CRIU requires it),
 * has joined the job's cgroups before exec, has a mount namespace with its own /proc (unless the
 * spec says mountproc=0), runs as the caller's uid/gids in the caller's cwd with
 * exactly the given environment, stdout/stderr appended to <jobDir>/stdout and <jobDir>/stderr,
 * stdin from the FIFO <jobDir>/stdin or /dev/null, and no other fd.
 *
 * Signals: the daemon signals tini directly (host pid from the pid file). SIGTERM, SIGINT and
 * SIGQUIT sent to the shim are forwarded to tini as well; SIGHUP and SIGPIPE are ignored.
 *
 * Stdin: the shim keeps a write end of the FIFO open, so the job blocks in read() (rather than
 * seeing EOF) until someone writes; SIGUSR1 to the shim closes that write end, after which the
 * job sees EOF once every other writer has closed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <grp.h>

#include "shim.h"

#define SHIM_VERSION "1"

struct job {
  const char *dir; /* absolute path of the job dir */
  int dirfd;
  struct spec spec;
  int restore;
};

/* Write end of the stdin FIFO kept by the shim; closed by SIGUSR1 (close() is signal-safe). */
static volatile int stdin_keep = -1;

static void on_usr1(int sig) {
  (void)sig;
  int fd = stdin_keep;
  stdin_keep = -1;
  if (fd >= 0) close(fd);
}

/* Host pid of the job's root once started: SIGTERM/SIGINT/SIGQUIT to the shim go to it, so
 * that stopping the shim stops the job and its exit is still recorded (kill() is signal-safe). */
static volatile pid_t root_pid = 0;

static void on_forward(int sig) {
  pid_t pid = root_pid;
  if (pid > 0) kill(pid, sig);
}

static void logmsg(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "ssi-shim[%d]: ", (int)getpid());
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

/* One line to the daemon on fd 1, then fd 1 goes to the shim log like fd 2. */
static void handshake(const char *fmt, ...) {
  char line[1200];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
  va_end(ap);
  if (n < 0) n = 0;
  if (n > (int)sizeof(line) - 2) n = (int)sizeof(line) - 2;
  line[n++] = '\n';
  if (write(1, line, (size_t)n) < 0) logmsg("handshake lost: %s", strerror(errno));
  dup2(2, 1);
}

static void record_error(struct job *j, const char *msg) {
  char buf[1200];
  snprintf(buf, sizeof(buf), "error=%s\ntime=%lld\n", msg, now_ms());
  for (char *p = buf + 6; *p && p < buf + sizeof(buf) - 1; p++)
    if (*p == '\n' && strncmp(p, "\ntime=", 6) != 0) *p = ' ';
  if (write_atomic(j->dirfd, "exit", buf) < 0) logmsg("write exit: %s", strerror(errno));
}

static void fail(struct job *j, const char *msg) {
  logmsg("%s", msg);
  record_error(j, msg);
  handshake("error %s", msg);
  exit(1);
}

/* Child side of a failed setup step: report over the CLOEXEC error pipe and die. */
static void child_fail(int errfd, const char *what) {
  char msg[600];
  int n = snprintf(msg, sizeof(msg), "%s: %s", what, strerror(errno));
  if (n > 0 && write(errfd, msg, (size_t)n) < 0) _exit(126);
  _exit(127);
}

static void reset_signals(void) {
  sigset_t none;
  for (int sig = 1; sig < NSIG; sig++) signal(sig, SIG_DFL);
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
}

/* Opens <jobDir>/name by path (not via the shim's dirfd): with a private mount namespace, CRIU
 * needs every fd of the job opened inside that namespace. */
static int open_in_job(struct job *j, const char *name, int flags) {
  char path[4200];
  snprintf(path, sizeof(path), "%s/%s", j->dir, name);
  return open(path, flags | O_CLOEXEC, 0600);
}

static void open_stdio(struct job *j, int errfd) {
  int out = O_WRONLY | O_CREAT | O_APPEND;
  int in = j->spec.stdin_fifo ? open_in_job(j, "stdin", O_RDONLY) : open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (in < 0) child_fail(errfd, "open stdin");
  int outfd = open_in_job(j, "stdout", out), errlogfd = open_in_job(j, "stderr", out);
  if (outfd < 0 || errlogfd < 0) child_fail(errfd, "open output files");
  if (dup2(in, 0) < 0 || dup2(outfd, 1) < 0 || dup2(errlogfd, 2) < 0) child_fail(errfd, "dup2");
}

/* New IPC, UTS and (unless disabled) mount namespaces; in the latter a /proc of the job's own
 * PID namespace, so /proc/1 is tini and /proc/<getpid()> is the caller. Host mounts made later
 * still propagate in (slave). */
static void enter_namespaces(struct job *j, int errfd) {
  int flags = CLONE_NEWIPC | CLONE_NEWUTS | (j->spec.mount_proc ? CLONE_NEWNS : 0);
  if (unshare(flags) < 0) child_fail(errfd, "unshare");
  if (j->spec.hostname && sethostname(j->spec.hostname, strlen(j->spec.hostname)) < 0)
    child_fail(errfd, "sethostname");
  if (!j->spec.mount_proc) return;
  if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0) child_fail(errfd, "make / rslave");
  if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
    child_fail(errfd, "mount /proc");
}

static void join_cgroups(struct job *j, int errfd) {
  for (size_t i = 0; i < j->spec.ncgroups; i++) {
    int fd = open(j->spec.cgroups[i], O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, "0", 1) != 1) child_fail(errfd, j->spec.cgroups[i]);
    close(fd);
  }
}

static void drop_privileges(struct job *j, int errfd) {
  if (setgroups(j->spec.ngroups, j->spec.groups) < 0) child_fail(errfd, "setgroups");
  if (setgid(j->spec.gid) < 0) child_fail(errfd, "setgid");
  if (setuid(j->spec.uid) < 0) child_fail(errfd, "setuid");
  /* A user's job never gains privileges it did not have: setuid and file-capability binaries run
   * without them (root's jobs keep what root has). */
  if (j->spec.uid != 0 && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) child_fail(errfd, "no_new_privs");
  /* After the uid change: a user's job has no_new_privs by now, root's has CAP_SYS_ADMIN. */
  if (!j->spec.io_uring && block_io_uring() < 0) child_fail(errfd, "seccomp (blocking io_uring)");
}

/* Pid 1 of the new PID namespace: becomes tini. Never returns. */
static void child_run(struct job *j, int errfd) {
  reset_signals();
  join_cgroups(j, errfd);
  if (setsid() < 0) child_fail(errfd, "setsid");
  enter_namespaces(j, errfd);
  open_stdio(j, errfd);
  drop_privileges(j, errfd);
  if (chdir(j->spec.cwd ? j->spec.cwd : "/") < 0) child_fail(errfd, "chdir");
  if (close_range(3U, ~0U, CLOSE_RANGE_CLOEXEC) < 0) child_fail(errfd, "close_range");
  char **argv = calloc(j->spec.nargs + 4, sizeof(char *));
  if (!argv) child_fail(errfd, "calloc");
  argv[0] = "tini";
  argv[1] = "-g";
  argv[2] = "--";
  memcpy(argv + 3, j->spec.args, j->spec.nargs * sizeof(char *));
  execve(j->spec.tini, argv, j->spec.env);
  child_fail(errfd, j->spec.tini);
}

/* Child of restore mode: joins the job's cgroups, runs the restore command with output to the
 * shim log. Never returns. */
static void child_restore(struct job *j, int errfd) {
  reset_signals();
  /* The restored tree lands in the cgroups of the restoring criu (--manage-cgroups=ignore). */
  join_cgroups(j, errfd);
  if (setsid() < 0) child_fail(errfd, "setsid");
  int nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (nullfd < 0 || dup2(nullfd, 0) < 0 || dup2(2, 1) < 0) child_fail(errfd, "stdio");
  if (close_range(3U, ~0U, CLOSE_RANGE_CLOEXEC) < 0) child_fail(errfd, "close_range");
  execvp(j->spec.cmd[0], j->spec.cmd);
  child_fail(errfd, j->spec.cmd[0]);
}

/* Reads the child's setup error (empty when exec succeeded and closed the pipe). */
static int read_child_error(int errfd, char *err, size_t errlen) {
  ssize_t n;
  do n = read(errfd, err, errlen - 1);
  while (n < 0 && errno == EINTR);
  close(errfd);
  err[n > 0 ? n : 0] = '\0';
  return n > 0 ? -1 : 0;
}

static pid_t fork_child(struct job *j, int pipefd[2], char *err, size_t errlen) {
  if (pipe2(pipefd, O_CLOEXEC) < 0) {
    snprintf(err, errlen, "pipe2: %s", strerror(errno));
    return -1;
  }
  pid_t pid = fork();
  if (pid < 0) snprintf(err, errlen, "fork: %s", strerror(errno));
  if (pid == 0) close(pipefd[0]);
  else close(pipefd[1]);
  (void)j;
  return pid;
}

static pid_t start_run(struct job *j, char *err, size_t errlen) {
  int pipefd[2];
  if (unshare(CLONE_NEWPID) < 0) {
    snprintf(err, errlen, "unshare(CLONE_NEWPID): %s", strerror(errno));
    return -1;
  }
  pid_t pid = fork_child(j, pipefd, err, errlen);
  if (pid == 0) child_run(j, pipefd[1]);
  if (pid > 0 && read_child_error(pipefd[0], err, errlen) < 0) {
    waitpid(pid, NULL, 0);
    return -1;
  }
  return pid;
}

static pid_t read_pidfile(const char *path, char *err, size_t errlen) {
  char buf[32] = {0};
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
  if (fd >= 0) close(fd);
  long pid = n > 0 ? strtol(buf, NULL, 10) : 0;
  if (pid <= 0) snprintf(err, errlen, "no pid in %s", path);
  return pid > 0 ? (pid_t)pid : -1;
}

static pid_t start_restore(struct job *j, char *err, size_t errlen) {
  int pipefd[2], status;
  if (!j->spec.ncmd || !j->spec.pidfile) {
    snprintf(err, errlen, "restore spec needs cmd and pidfile");
    return -1;
  }
  if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) {
    snprintf(err, errlen, "PR_SET_CHILD_SUBREAPER: %s", strerror(errno));
    return -1;
  }
  pid_t cmd = fork_child(j, pipefd, err, errlen);
  if (cmd == 0) child_restore(j, pipefd[1]);
  if (cmd < 0 || read_child_error(pipefd[0], err, errlen) < 0) return -1;
  while (waitpid(cmd, &status, 0) < 0 && errno == EINTR) {}
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    snprintf(err, errlen, "restore command failed (status 0x%x), see shim.log", status);
    return -1;
  }
  pid_t root = read_pidfile(j->spec.pidfile, err, errlen);
  if (root > 0 && proc_ppid(root) != getpid()) {
    snprintf(err, errlen, "restored root %d is not a child of the shim", (int)root);
    return -1;
  }
  return root;
}

/* A signal sent right after start could be lost twice over: until tini has blocked the signals it
 * forwards, it is pid 1 of its namespace with default handlers and the kernel drops a SIGTERM from
 * outside; and until tini's child has made its own process group, tini's kill(-pgid) (-g) finds
 * nobody. tini blocks signals before it forks, so report the job started only once tini's child
 * leads its own group (or tini is gone), waiting at most ~1 s. */
static void wait_signals_ready(pid_t pid) {
  struct timespec step = {0, 50000};
  for (int i = 0; i < 20000 && proc_child_in_own_group(pid) == 0; i++) nanosleep(&step, NULL);
}

/* Keeps a write end of the stdin FIFO so the job does not see EOF before anyone wrote. Opened
 * O_RDWR first (never blocks, needs no reader yet); swapped for a write-only end once the job
 * holds the read end, so writers get EPIPE after the job is gone. */
static int stdin_keepalive(struct job *j) {
  if (mkfifoat(j->dirfd, "stdin", 0600) < 0 && errno != EEXIST) return -1;
  stdin_keep = openat(j->dirfd, "stdin", O_RDWR | O_CLOEXEC);
  return stdin_keep < 0 ? -1 : 0;
}

static void stdin_write_only(struct job *j) {
  int w = openat(j->dirfd, "stdin", O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  if (w < 0) {
    logmsg("reopen stdin write end: %s (keeping O_RDWR)", strerror(errno));
    return;
  }
  int old = stdin_keep;
  stdin_keep = w;
  close(old);
}

static void record_started(struct job *j, pid_t pid, unsigned long long start, unsigned long long shimstart) {
  char buf[256];
  snprintf(buf, sizeof(buf), "pid=%d\nstart=%llu\nshim=%d\nshimstart=%llu\n", (int)pid, start,
           (int)getpid(), shimstart);
  if (write_atomic(j->dirfd, "pid", buf) < 0) {
    kill(pid, SIGKILL);
    fail(j, "cannot write pid file");
  }
}

/* Reaps children (the root and, in restore mode, any reparented orphan) until root ends. */
static int wait_root(pid_t root) {
  int status = 0;
  for (;;) {
    pid_t got = waitpid(-1, &status, 0);
    if (got == root) return status;
    if (got < 0 && errno != EINTR) {
      logmsg("waitpid: %s", strerror(errno));
      return -1;
    }
  }
}

static void record_exit(struct job *j, int status) {
  char buf[256];
  int n;
  if (WIFSIGNALED(status))
    n = snprintf(buf, sizeof(buf), "signal=%d\ncore=%d\n", WTERMSIG(status), WCOREDUMP(status) ? 1 : 0);
  else n = snprintf(buf, sizeof(buf), "code=%d\n", status < 0 ? 255 : WEXITSTATUS(status));
  if (j->spec.oom_file) n += snprintf(buf + n, sizeof(buf) - n, "oom_kill=%lld\n", read_oom_kill(j->spec.oom_file));
  snprintf(buf + n, sizeof(buf) - n, "time=%lld\n", now_ms());
  if (write_atomic(j->dirfd, "exit", buf) < 0) logmsg("write exit: %s", strerror(errno));
}

static void setup_process(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_usr1;
  sigaction(SIGUSR1, &sa, NULL);
  sa.sa_handler = on_forward;
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGQUIT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  if (chdir("/") < 0) logmsg("chdir /: %s", strerror(errno));
}

/* Opens the job dir and the shim log (as fd 2); exits with a handshake error on failure. */
static void open_job(struct job *j, const char *dir) {
  close_range(3U, ~0U, 0U);
  j->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int logfd = j->dirfd < 0 ? -1 : openat(j->dirfd, "shim.log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (logfd < 0) {
    handshake("error open %s: %s", dir, strerror(errno));
    exit(1);
  }
  dup2(logfd, 2);
  close(logfd);
  setvbuf(stderr, NULL, _IOLBF, 0);
}

/* Leaves the daemon's process tree: the daemon reaps the intermediate process at once. */
static void detach(void) {
  pid_t pid = fork();
  if (pid < 0) {
    handshake("error fork: %s", strerror(errno));
    exit(1);
  }
  if (pid > 0) _exit(0);
  setsid();
}

int main(int argc, char **argv) {
  struct job j = {0};
  char err[1024];
  if (argc == 2 && !strcmp(argv[1], "--version")) return puts("ssi-shim " SHIM_VERSION) < 0;
  if (argc != 3 || (strcmp(argv[1], "run") && strcmp(argv[1], "restore"))) {
    fprintf(stderr, "usage: ssi-shim run|restore <jobDir>\n");
    return 2;
  }
  j.restore = !strcmp(argv[1], "restore");
  j.dir = argv[2];
  if (j.dir[0] != '/' || strlen(j.dir) > 4000) {
    fprintf(stderr, "ssi-shim: job dir must be an absolute path\n");
    return 2;
  }
  open_job(&j, argv[2]);
  setup_process();
  if (spec_read(j.dirfd, &j.spec, err, sizeof(err)) < 0) fail(&j, err);
  if (!j.restore && (!j.spec.tini || !j.spec.nargs)) fail(&j, "run spec needs tini and arg");
  detach();
  if (j.spec.stdin_fifo && stdin_keepalive(&j) < 0) fail(&j, "cannot create stdin FIFO");
  pid_t root = j.restore ? start_restore(&j, err, sizeof(err)) : start_run(&j, err, sizeof(err));
  if (root < 0) fail(&j, err);
  root_pid = root;
  if (!j.restore) wait_signals_ready(root);
  unsigned long long start = proc_starttime(root), shimstart = proc_starttime(getpid());
  record_started(&j, root, start, shimstart);
  if (j.spec.stdin_fifo) stdin_write_only(&j);
  handshake("ok %d %llu %d %llu", (int)root, start, (int)getpid(), shimstart);
  if (j.restore && j.spec.hold) hold_until_adopted(root);
  record_exit(&j, wait_root(root));
  return 0;
}

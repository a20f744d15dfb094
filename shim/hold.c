/* Restore mode with hold=1: fd 0 is the daemon's end of a socket. Until the daemon has taken the
 * restored job on (recorded it; it then writes "go"), the job must not outlive the daemon: the
 * source of a migration rolls back when the target's daemon dies, and a copy left running here would
 * run twice. So EOF (the daemon died) or anything but "go" kills the restored root, whose death
 * takes its whole PID namespace along. The SIGIO handler does it: read, close, kill are signal-safe. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "shim.h"

static volatile int hold_fd = -1;
static volatile pid_t held_root = 0;

static void on_hold_io(int sig) {
  (void)sig;
  int saved = errno, fd = hold_fd;
  char buf[8];
  ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf));
  if (fd >= 0 && !(n < 0 && (errno == EAGAIN || errno == EINTR))) {
    hold_fd = -1;
    close(fd);
    if (!(n >= 2 && buf[0] == 'g' && buf[1] == 'o') && held_root > 0) kill(held_root, SIGKILL);
  }
  errno = saved;
}

void hold_until_adopted(pid_t root) {
  held_root = root;
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_hold_io;
  sa.sa_flags = SA_RESTART;
  sigaction(SIGIO, &sa, NULL);
  int fd = fcntl(0, F_DUPFD_CLOEXEC, 3);
  int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null >= 0) {
    dup2(null, 0);
    close(null);
  }
  if (fd < 0 || fcntl(fd, F_SETOWN, getpid()) < 0 || fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_ASYNC | O_NONBLOCK) < 0) {
    fprintf(stderr, "ssi-shim[%d]: hold: cannot watch the daemon's socket (%s): killing the restored job\n", (int)getpid(), strerror(errno));
    kill(root, SIGKILL);
    return;
  }
  hold_fd = fd;
  raise(SIGIO); /* what arrived before O_ASYNC was on */
}

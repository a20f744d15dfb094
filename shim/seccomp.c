/* The job's seccomp filter: io_uring_setup fails with ENOSYS. CRIU cannot checkpoint an io_uring
 * instance, and programs that find io_uring missing use epoll or threads instead (libuv in Node
 * >= 22 opens io_uring instances in every process), so the job stays migratable. */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include "shim.h"

#if defined(__x86_64__)
#define JOB_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define JOB_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

int block_io_uring(void) {
#if defined(JOB_AUDIT_ARCH) && defined(__NR_io_uring_setup)
  struct sock_filter filter[] = {
    /* Another ABI (e.g. i386 on x86_64) numbers syscalls differently: left alone; ssi's
     * pre-migration check still refuses a job that holds an io_uring instance. */
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, JOB_AUDIT_ARCH, 1, 0),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA)),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = { .len = sizeof(filter) / sizeof(filter[0]), .filter = filter };
  return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0);
#else
  return 0;
#endif
}

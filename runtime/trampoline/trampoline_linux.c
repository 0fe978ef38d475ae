// See doc.go. Runs as a constructor, before the Go runtime: the process has
// one thread, so the filter needs no TSYNC.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#define TORI_ARCH_NATIVE AUDIT_ARCH_X86_64
#define TORI_ARCH_COMPAT AUDIT_ARCH_I386
#elif defined(__aarch64__)
#define TORI_ARCH_NATIVE AUDIT_ARCH_AARCH64
#define TORI_ARCH_COMPAT AUDIT_ARCH_ARM
#endif

#define TORI_CLONE3_NR 435        /* every architecture, compat ABIs too */
#define TORI_X32_BIT 0x40000000u  /* x32 syscalls on AUDIT_ARCH_X86_64 */

static void tori_exec_fail(int fd, const char *what, const char *path, int err)
{
	char buf[16];
	int n = snprintf(buf, sizeof buf, "%d", err);
	dprintf(2, "tori-run capsule-exec %s: %s: %s\n", path, what, strerror(err));
	if (fd >= 0 && write(fd, buf, n) < 0) {
		/* the init reads EOF and the exit status 127 */
	}
	_exit(127);
}

static void tori_deny_clone3(int fd, const char *path)
{
	struct sock_filter filter[] = {
		/* 0 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		/* 1 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, TORI_ARCH_NATIVE, 1, 0),
		/* 2 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, TORI_ARCH_COMPAT, 0, 4),
		/* 3 */ BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		/* 4 */ BPF_STMT(BPF_ALU | BPF_AND | BPF_K, ~TORI_X32_BIT),
		/* 5 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, TORI_CLONE3_NR, 2, 0),
		/* 6 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		/* 7 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		/* 8 */ BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
	};
	struct sock_fprog prog = {.len = sizeof filter / sizeof filter[0], .filter = filter};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		tori_exec_fail(fd, "prctl(PR_SET_NO_NEW_PRIVS)", path, errno);
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
		tori_exec_fail(fd, "seccomp(SECCOMP_SET_MODE_FILTER)", path, errno);
}

// Priority 200: before libcontainer's nsexec constructor (default
// priority), so that no environment variable of a service can send the
// trampoline down that path first.
//
// argv: tori-run capsule-exec MODE STATUS-FD PATH ARGV0 ARGS... (see
// runtime.ExecCommand); MODE is "-" or a comma list of listen-pid and
// no-clone3.
__attribute__((constructor(200))) static void tori_capsule_exec(int argc, char **argv, char **envp)
{
	(void)envp; /* setenv may replace environ: exec with environ */
#ifdef TORI_ARCH_NATIVE
	if (argc < 6 || argv == NULL || strcmp(argv[1], "capsule-exec") != 0)
		return;
	const char *path = argv[4];
	char *end;
	long fd = strtol(argv[3], &end, 10);
	if (*argv[3] == '\0' || *end != '\0' || fd < 3 || fd > 1 << 20) {
		dprintf(2, "tori-run capsule-exec: status fd %s: a number from 3 on expected\n", argv[3]);
		_exit(127);
	}
	if (fcntl((int)fd, F_SETFD, FD_CLOEXEC) < 0)
		tori_exec_fail(-1, "status fd", path, errno);
	/* As closed as the init was, until the service's own execve. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	char mode[64];
	if (strlen(argv[2]) >= sizeof mode)
		tori_exec_fail((int)fd, "mode too long", path, EINVAL);
	strcpy(mode, argv[2]);
	char *save = NULL;
	for (char *m = strtok_r(mode, ",", &save); m != NULL; m = strtok_r(NULL, ",", &save)) {
		if (strcmp(m, "listen-pid") == 0) {
			char pid[24];
			snprintf(pid, sizeof pid, "%d", (int)getpid());
			if (setenv("LISTEN_PID", pid, 1) < 0)
				tori_exec_fail((int)fd, "setenv LISTEN_PID", path, errno);
		} else if (strcmp(m, "no-clone3") == 0) {
			tori_deny_clone3((int)fd, path);
		} else if (strcmp(m, "-") != 0) {
			dprintf(2, "tori-run capsule-exec: unknown mode %s\n", m);
			tori_exec_fail((int)fd, "mode", path, EINVAL);
		}
	}
	execve(path, &argv[5], environ);
	tori_exec_fail((int)fd, "execve", path, errno);
#else
	(void)argc;
	(void)argv; /* the Go path (runtime.runExec) does it */
#endif
}

/*
 * stamp: the service every supervisor restarts in bench/supervise.
 *
 *   stamp [FILE]    (env STAMP_FILE overrides FILE, default ./stamps: s6-supervise
 *                    passes the service's name as argv[1]; env STAMP_SLEEP_MS: live
 *                    that long first; env STAMP_NOTIFY_FD: write a newline to that
 *                    fd at start, s6's readiness notification)
 *
 * Appends "<start> <end>\n" (CLOCK_REALTIME, ns since the epoch) to FILE and
 * exits with status 1. <start> is taken first thing in main, <end> just before
 * the write and the exit. Restart latency = next <start> - previous <end>: the
 * exit, the supervisor noticing it and deciding, the fork/exec of the
 * replacement and its start-up up to main. Built static (no dynamic loader), so
 * every supervisor pays the same start-up. CLOCK_REALTIME so that the stamps
 * compare with tori-run's event times (no time namespace in a capsule).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static long long ns(void) {
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv) {
	long long start = ns();
	const char *file = getenv("STAMP_FILE");
	if (!file) file = argc > 1 ? argv[1] : "stamps";
	const char *nfd = getenv("STAMP_NOTIFY_FD");
	if (nfd && *nfd) {
		int fd = atoi(nfd);
		if (write(fd, "\n", 1) != 1) return 4;
		close(fd);
	}
	const char *s = getenv("STAMP_SLEEP_MS");
	long ms = s ? atol(s) : 0;
	if (ms > 0) {
		struct timespec d = {ms / 1000, (ms % 1000) * 1000000L};
		nanosleep(&d, NULL);
	}
	int fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0) return 2;
	char buf[64];
	long long end = ns();
	int n = snprintf(buf, sizeof buf, "%lld %lld\n", start, end);
	if (write(fd, buf, n) != n) return 3;
	return 1;
}

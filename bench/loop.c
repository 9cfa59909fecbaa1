/* loop: the warm-read figures of bench/run, in C so that no interpreter hides the
 * filesystem. Prints the nanoseconds one iteration took on average.
 *
 *   loop read PATH N    N times: open, read to the end, close
 *   loop stat PATH N    N times: stat
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int read_once(const char *path)
{
	char buf[65536];
	ssize_t n;
	int fd = open(path, O_RDONLY);

	if (fd < 0)
		return -1;
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		;
	close(fd);
	return n < 0 ? -1 : 0;
}

int main(int argc, char **argv)
{
	struct stat st;

	if (argc != 4 || (strcmp(argv[1], "read") && strcmp(argv[1], "stat"))) {
		fprintf(stderr, "usage: loop read|stat PATH N\n");
		return 2;
	}
	const char *path = argv[2];
	long n = atol(argv[3]);
	int is_read = strcmp(argv[1], "read") == 0;
	double start = now_ns();

	for (long i = 0; i < n; i++) {
		if (is_read ? read_once(path) : stat(path, &st)) {
			perror(path);
			return 1;
		}
	}
	printf("%.1f\n", (now_ns() - start) / (double)(n > 0 ? n : 1));
	return 0;
}

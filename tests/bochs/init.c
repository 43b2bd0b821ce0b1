/* /init of the initramfs that tests/bochs/run.sh boots in Bochs.
 * Mounts /dev and /proc, makes the serial console stdin/stdout/stderr, runs /prog with the
 * NUL-separated argv from /args, prints "MOEC-START" before and "MOEC-EXIT <status>" after it
 * (status: the exit code, or 128+signal), then powers the emulator off. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>
#include <sys/klog.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

static void power_off(void) {
    sync();
    tcdrain(STDOUT_FILENO);
    /* Bochs' shutdown port: writing "Shutdown" to 0x8900 ends the emulator at once. */
    if (ioperm(0x8900, 1, 1) == 0)
        for (const char *s = "Shutdown"; *s; s++) outb((unsigned char)*s, 0x8900);
    reboot(RB_POWER_OFF); /* ACPI power-off (or halt, when booted with acpi=off) */
    for (;;) pause();
}

static char **read_args(void) {
    static char buf[1 << 16];
    static char *argv[1024];
    int fd = open("/args", O_RDONLY);
    ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
    if (n <= 0) return NULL;
    int argc = 0;
    for (char *p = buf; p < buf + n && argc < 1023; p += strlen(p) + 1) argv[argc++] = p;
    argv[argc] = NULL;
    return argv;
}

int main(void) {
    mkdir("/dev", 0755);
    mkdir("/proc", 0755);
    mkdir("/tmp", 01777);
    mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
    mount("proc", "/proc", "proc", 0, NULL);
    int fd = open("/dev/ttyS0", O_RDWR | O_NOCTTY);
    if (fd < 0) fd = open("/dev/console", O_RDWR | O_NOCTTY);
    if (fd >= 0) {
        for (int i = 0; i < 3; i++) dup2(fd, i);
        if (fd > 2) close(fd);
    }
    struct termios t;
    if (tcgetattr(STDOUT_FILENO, &t) == 0) { /* pass output bytes through as they are (no \n -> \r\n) */
        t.c_oflag &= ~(tcflag_t)OPOST;
        t.c_lflag &= ~(tcflag_t)(ECHO | ICANON);
        tcsetattr(STDOUT_FILENO, TCSANOW, &t);
    }
    klogctl(8 /* SYSLOG_ACTION_CONSOLE_LEVEL */, NULL, 1); /* keep kernel messages (but panics) out of the output */

    char **argv = read_args();
    if (!argv) {
        fprintf(stderr, "init: cannot read /args\nMOEC-EXIT 125\n");
        power_off();
    }
    static char *envp[] = {"PATH=/", "HOME=/tmp", "TMPDIR=/tmp", "TERM=dumb", NULL};
    printf("MOEC-START\n");
    fflush(stdout);
    int status = 0, code;
    pid_t pid = fork();
    if (pid == 0) {
        if (chdir("/tmp") != 0) perror("init: chdir /tmp");
        execve("/prog", argv, envp);
        fprintf(stderr, "init: cannot run /prog: %s\n", strerror(errno));
        _exit(126);
    }
    if (pid < 0) {
        fprintf(stderr, "init: fork: %s\n", strerror(errno));
        code = 125;
    } else {
        for (;;) { /* also reaps orphans the program leaves behind */
            pid_t w = wait(&status);
            if (w == pid || (w < 0 && errno != EINTR)) break;
        }
        if (WIFEXITED(status)) {
            code = WEXITSTATUS(status);
        } else {
            code = 128 + WTERMSIG(status);
            fprintf(stderr, "init: program killed by signal %d (%s)\n", WTERMSIG(status), strsignal(WTERMSIG(status)));
        }
    }
    printf("MOEC-EXIT %d\n", code);
    fflush(stdout);
    power_off();
}

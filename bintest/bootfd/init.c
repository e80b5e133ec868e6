/*
 * kvmport bootfd init: PID 1 of the bootfd.img initramfs (i386, freestanding).
 *
 * Prints a banner, runs a short self-check of the machine (kernel version, memory size,
 * timer interrupts ticking, serial console input) and powers off (a halt: there is no ACPI),
 * or reboots with `kvmport.end=reboot`.  With `kvmport.shell=1` on the kernel command line
 * it runs a tiny built-in shell on the console instead.
 *
 * There is no i386 C library on the build host (Debian's musl-tools is amd64 only), so this
 * talks to the kernel directly through `int $0x80`: a few KB, no libc, no dynamic memory.
 * Build: gcc -m32 -Os -ffreestanding -fno-pic -fno-stack-protector -nostdlib -static
 *        -Wl,--build-id=none -o init init.c
 */

typedef unsigned int u32;
typedef unsigned long ulong;

/* i386 system call numbers (arch/x86/entry/syscalls/syscall_32.tbl) */
enum {
	NR_exit = 1, NR_read = 3, NR_write = 4, NR_open = 5, NR_close = 6, NR_mount = 21,
	NR_pause = 29, NR_sync = 36, NR_mkdir = 39, NR_dup2 = 63, NR_reboot = 88,
	NR_sysinfo = 116, NR_uname = 122, NR_getdents = 141, NR_poll = 168,
	NR_clock_nanosleep_time64 = 407,
};

#define O_RDONLY 0
#define O_RDWR 2
#define O_DIRECTORY 0200000
#define POLLIN 1
#define REBOOT_MAGIC1 0xfee1deadU
#define REBOOT_MAGIC2 672274793
#define RB_POWER_OFF 0x4321fedc
#define RB_AUTOBOOT 0x01234567

#define TAG "kvmport bootfd: "
#define INPUT_TIMEOUT_MS 5000

struct utsname { char sysname[65], nodename[65], release[65], version[65], machine[65], domain[65]; };
struct sysinfo {
	long uptime;
	ulong loads[3];
	ulong totalram, freeram, sharedram, bufferram, totalswap, freeswap;
	unsigned short procs, pad;
	ulong totalhigh, freehigh;
	u32 mem_unit;
	char reserved[8];
};
/* 64-bit time: the kernel has no COMPAT_32BIT_TIME (tinyconfig), so no nanosleep (162). */
struct timespec64 { long long tv_sec, tv_nsec; };
#define CLOCK_MONOTONIC 1
struct pollfd { int fd; short events, revents; };
struct linux_dirent { ulong d_ino, d_off; unsigned short d_reclen; char d_name[]; };

static long sys3(long n, long a, long b, long c)
{
	long r;

	__asm__ volatile("int $0x80" : "=a"(r) : "a"(n), "b"(a), "c"(b), "d"(c) : "memory");
	return r;
}

static long sys5(long n, long a, long b, long c, long d, long e)
{
	long r;

	__asm__ volatile("int $0x80" : "=a"(r) : "a"(n), "b"(a), "c"(b), "d"(c), "S"(d), "D"(e)
			 : "memory");
	return r;
}

#define SYS(n, a, b, c) sys3(NR_##n, (long)(a), (long)(b), (long)(c))

/* The compiler may emit calls to these. */
void *memset(void *d, int c, ulong n)
{
	unsigned char *p = d;

	while (n--)
		*p++ = (unsigned char)c;
	return d;
}

void *memcpy(void *d, const void *s, ulong n)
{
	unsigned char *p = d;
	const unsigned char *q = s;

	while (n--)
		*p++ = *q++;
	return d;
}

static ulong slen(const char *s)
{
	ulong n = 0;

	while (s[n])
		n++;
	return n;
}

static int streq(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return *a == *b;
}

/* ---- output ---- */

static void puts_(const char *s)
{
	SYS(write, 1, s, slen(s));
}

static void putu(ulong v)
{
	char buf[12];
	int i = sizeof(buf);

	buf[--i] = '\0';
	do {
		buf[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	puts_(buf + i);
}

/* Centiseconds as "S.CC". */
static void putcs(ulong cs)
{
	putu(cs / 100);
	puts_(".");
	if (cs % 100 < 10)
		puts_("0");
	putu(cs % 100);
}

static int failures;

static void check(int ok, const char *what)
{
	puts_(TAG "check ");
	puts_(what);
	puts_(ok ? " ok\n" : " FAIL\n");
	if (!ok)
		failures++;
}

/* ---- files ---- */

static long slurp(const char *path, char *buf, ulong size)
{
	long fd = SYS(open, path, O_RDONLY, 0);
	long total = 0, n;

	if (fd < 0)
		return -1;
	while ((ulong)total < size - 1 && (n = SYS(read, fd, buf + total, size - 1 - total)) > 0)
		total += n;
	SYS(close, fd, 0, 0);
	buf[total] = '\0';
	return total;
}

static const char *skip_spaces(const char *p)
{
	while (*p == ' ')
		p++;
	return p;
}

/* Parse a decimal number; *end gets the first non-digit. */
static ulong parse_u(const char *p, const char **end)
{
	ulong v = 0;

	while (*p >= '0' && *p <= '9')
		v = v * 10 + (ulong)(*p++ - '0');
	*end = p;
	return v;
}

/* Sum of the counts on the "0:" line of /proc/interrupts (IRQ 0, the i8254 PIT). */
static long timer_irqs(void)
{
	static char buf[2048];
	const char *p = buf, *end;
	ulong sum = 0;

	if (slurp("/proc/interrupts", buf, sizeof(buf)) <= 0)
		return -1;
	while (*p) {
		p = skip_spaces(p);
		if (p[0] == '0' && p[1] == ':') {
			p += 2;
			for (;;) {
				p = skip_spaces(p);
				if (*p < '0' || *p > '9')
					return (long)sum;
				sum += parse_u(p, &end);
				p = end;
			}
		}
		while (*p && *p != '\n')
			p++;
		if (*p)
			p++;
	}
	return -1;
}

/* /proc/uptime in centiseconds, or -1. */
static long uptime_cs(void)
{
	char buf[64];
	const char *p;
	ulong s, cs;

	if (slurp("/proc/uptime", buf, sizeof(buf)) <= 0)
		return -1;
	s = parse_u(buf, &p);
	if (*p != '.')
		return (long)(s * 100);
	cs = parse_u(p + 1, &p);
	return (long)(s * 100 + cs);
}

static int cmdline_has(const char *flag)
{
	static char buf[1024];
	ulong len = slen(flag), i, j;

	if (slurp("/proc/cmdline", buf, sizeof(buf)) <= 0)
		return 0;
	for (i = 0; buf[i]; i++) {
		if (i > 0 && buf[i - 1] != ' ')
			continue;
		for (j = 0; j < len && buf[i + j] == flag[j]; j++)
			;
		if (j == len && (buf[i + j] == ' ' || buf[i + j] == '\n' || buf[i + j] == '\0'))
			return 1;
	}
	return 0;
}

/* Read one line from the console, waiting at most timeout_ms (-1: forever). */
static long read_line(char *buf, ulong size, int timeout_ms)
{
	struct pollfd pfd = { 0, POLLIN, 0 };
	long n;

	if (SYS(poll, &pfd, 1, timeout_ms) <= 0)
		return -1;
	n = SYS(read, 0, buf, size - 1);
	if (n <= 0)
		return -1;
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		n--;
	buf[n] = '\0';
	return n;
}

static void power_off(void)
{
	puts_(TAG "powering off\n");
	SYS(sync, 0, 0, 0);
	SYS(reboot, REBOOT_MAGIC1, REBOOT_MAGIC2, RB_POWER_OFF);
	/* Not reached: with no ACPI/APM the kernel turns power-off into a halt. */
	for (;;)
		SYS(pause, 0, 0, 0);
}

static void self_check(void)
{
	static struct utsname u;
	struct sysinfo si;
	struct timespec64 ts = { 1, 0 };
	long up0, up1, irq0, irq1, n;
	char line[256];
	ulong kib;

	n = SYS(uname, &u, 0, 0);
	if (n == 0) {
		puts_(TAG "kernel ");
		puts_(u.sysname);
		puts_(" ");
		puts_(u.release);
		puts_(" ");
		puts_(u.machine);
		puts_("\n");
	}
	check(n == 0, "uname");

	n = SYS(sysinfo, &si, 0, 0);
	if (n == 0) {
		kib = si.mem_unit >= 1024 ? si.totalram * (si.mem_unit >> 10)
					 : (si.totalram >> 10) * si.mem_unit;
		puts_(TAG "memory ");
		putu(kib);
		puts_(" KiB total\n");
	}
	check(n == 0 && si.totalram > 0, "memory");

	up0 = uptime_cs();
	irq0 = timer_irqs();
	sys5(NR_clock_nanosleep_time64, CLOCK_MONOTONIC, 0, (long)&ts, 0, 0);
	up1 = uptime_cs();
	irq1 = timer_irqs();
	puts_(TAG "uptime ");
	putcs((ulong)up0);
	puts_(" -> ");
	putcs((ulong)up1);
	puts_(" s, timer irqs ");
	putu((ulong)irq0);
	puts_(" -> ");
	putu((ulong)irq1);
	puts_("\n");
	check(up0 >= 0 && up1 > up0, "uptime");
	check(irq0 >= 0 && irq1 > irq0, "timer");

	puts_(TAG "type a line within 5 s:\n");
	if (read_line(line, sizeof(line), INPUT_TIMEOUT_MS) >= 0) {
		puts_(TAG "console input: '");
		puts_(line);
		puts_("'\n");
	} else {
		puts_(TAG "console input: no input\n");
	}

	puts_(TAG "self-check ");
	puts_(failures ? "FAIL\n" : "PASS\n");
}

/* ---- a minimal shell for kvmport.shell=1 ---- */

static void cat_file(const char *path)
{
	char buf[512];
	long n, fd = SYS(open, path, O_RDONLY, 0);

	if (fd < 0) {
		puts_("cat: cannot open ");
		puts_(path);
		puts_("\n");
		return;
	}
	while ((n = SYS(read, fd, buf, sizeof(buf))) > 0)
		SYS(write, 1, buf, n);
	SYS(close, fd, 0, 0);
}

static void list_dir(const char *path)
{
	static char buf[2048];
	long n, fd = SYS(open, path, O_RDONLY | O_DIRECTORY, 0);

	if (fd < 0) {
		puts_("ls: cannot open ");
		puts_(path);
		puts_("\n");
		return;
	}
	while ((n = SYS(getdents, fd, buf, sizeof(buf))) > 0) {
		for (long off = 0; off < n;) {
			struct linux_dirent *d = (struct linux_dirent *)(buf + off);

			puts_(d->d_name);
			puts_("\n");
			off += d->d_reclen;
		}
	}
	SYS(close, fd, 0, 0);
}

static void shell(void)
{
	static char line[256];
	char *argv[16];
	int argc, i;
	char *p;

	puts_(TAG "shell; commands: help ls cat echo uname uptime check poweroff reboot\n");
	for (;;) {
		puts_("# ");
		if (read_line(line, sizeof(line), -1) < 0)
			continue;
		argc = 0;
		for (p = line; *p && argc < 15;) {
			while (*p == ' ' || *p == '\t')
				*p++ = '\0';
			if (!*p)
				break;
			argv[argc++] = p;
			while (*p && *p != ' ' && *p != '\t')
				p++;
		}
		argv[argc] = 0;
		if (argc == 0)
			continue;
		if (streq(argv[0], "help")) {
			puts_("help | ls [DIR] | cat FILE... | echo ARGS | uname | uptime | check"
			      " | poweroff | reboot\n");
		} else if (streq(argv[0], "ls")) {
			list_dir(argc > 1 ? argv[1] : "/");
		} else if (streq(argv[0], "cat")) {
			for (i = 1; i < argc; i++)
				cat_file(argv[i]);
		} else if (streq(argv[0], "echo")) {
			for (i = 1; i < argc; i++) {
				puts_(argv[i]);
				puts_(i + 1 < argc ? " " : "");
			}
			puts_("\n");
		} else if (streq(argv[0], "uname")) {
			cat_file("/proc/version");
		} else if (streq(argv[0], "uptime")) {
			cat_file("/proc/uptime");
		} else if (streq(argv[0], "check")) {
			failures = 0;
			self_check();
		} else if (streq(argv[0], "poweroff") || streq(argv[0], "exit")) {
			power_off();
		} else if (streq(argv[0], "reboot")) {
			SYS(sync, 0, 0, 0);
			SYS(reboot, REBOOT_MAGIC1, REBOOT_MAGIC2, RB_AUTOBOOT);
		} else {
			puts_(argv[0]);
			puts_(": unknown command (try help)\n");
		}
	}
}

static void mount_(const char *src, const char *dir, const char *type)
{
	SYS(mkdir, dir, 0755, 0);
	sys5(NR_mount, (long)src, (long)dir, (long)type, 0, 0);
}

void init_main(void)
{
	long fd;

	mount_("proc", "/proc", "proc");
	mount_("sysfs", "/sys", "sysfs");
	mount_("devtmpfs", "/dev", "devtmpfs");

	/* The kernel normally hands us /dev/console as fds 0-2 (the cpio has the node). */
	fd = SYS(open, "/dev/console", O_RDWR, 0);
	if (fd >= 0) {
		SYS(dup2, fd, 0, 0);
		SYS(dup2, fd, 1, 0);
		SYS(dup2, fd, 2, 0);
		if (fd > 2)
			SYS(close, fd, 0, 0);
	}

	puts_("\n" TAG "hello from the guest\n");
	if (cmdline_has("kvmport.shell=1"))
		shell();
	self_check();
	if (cmdline_has("kvmport.end=reboot")) {
		/* With reboot=t the kernel triple-faults at once: KVM_EXIT_SHUTDOWN for a VMM. */
		puts_(TAG "rebooting\n");
		SYS(reboot, REBOOT_MAGIC1, REBOOT_MAGIC2, RB_AUTOBOOT);
	}
	power_off();
}

__asm__(".globl _start\n"
	"_start:\n"
	"	xorl %ebp, %ebp\n"
	"	andl $-16, %esp\n"
	"	call init_main\n"
	"	movl $1, %eax\n"
	"	xorl %ebx, %ebx\n"
	"	int $0x80\n");

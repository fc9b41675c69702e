// SPDX-License-Identifier: GPL-2.0
/* pickguard watch: follow each process through "pickle module loaded ->
 * model file opened -> something suspicious executed" and report (or kill)
 * that exec.
 *
 * State per thread group (tgid):
 *   PYTHON   the image is an interpreter (python*, or it mapped libpython)
 *   PICKLE   it opened pickle*.pyc / _pickle*.so
 *   MODEL    then it opened a model file: it is an *origin*, armed
 *   DESC     created by an armed process (fork) or an armed process that
 *            exec'd: armed through any number of intermediate programs (env,
 *            nice, timeout, xargs, scripts), and for its whole life: a
 *            daemon that sleeps past the window is still armed
 *   LOADING  just exec'd, not known to be Python: its first opens (the
 *            dynamic loader's) are checked for libpython (embedded Pythons)
 * Children inherit their parent's state at fork; an armed state survives
 * exec. Every model open re-arms the window.
 *
 * Suspicious exec in an armed tree (each a kind reported to user space):
 *   shell        by name, by inode (hard links) or by ELF fingerprint (copies,
 *                renames, busybox) of the shells found at start
 *   inline       an interpreter (perl, ruby, node...) given code on its
 *                command line (-e ...)
 *   interpreter  such an interpreter running a script (a payload's dropped
 *                script.pl, or a #! script)
 *   launcher     a program that runs code outside the tree or hides what
 *                it runs: the dynamic loader run directly (ld.so /bin/sh),
 *                systemd-run, tmux, screen, at, crontab
 *   network      a network tool (curl, wget, nc, ssh...) by name or inode
 *   anonymous    an executable with no name in any directory (memfd,
 *                O_TMPFILE, deleted): always
 *   fresh        an executable created or changed since the tree was armed
 *                (a payload's dropped or copied binary)
 *
 * Apart from that sequence, every TCP socket that starts listening is
 * reported (EV_LISTEN) with the user stack's top words, so that user space
 * can tell a listener opened by torch.distributed's own code (TCPStore,
 * gloo, RPC) from one opened through Python's socket module. */
#include "vmlinux_min.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

#define F_PYTHON 1
#define F_PICKLE 2
#define F_MODEL 4
#define F_DESC 8
#define F_LOADING 16
#define ORIGIN (F_PYTHON | F_PICKLE | F_MODEL)

#define EV_PICKLE 1
#define EV_MODEL 2
#define EV_ALERT 3
#define EV_SIGNAL 4
#define EV_LISTEN 5

#define K_SHELL 1
#define K_INLINE 2
#define K_NETWORK 3
#define K_ANONYMOUS 4
#define K_FRESH 5
#define K_PYTHON 6 /* identity of a Python executable: arms, never alerts */
#define K_LAUNCHER 7
#define K_INTERP 8
#define K_PTRACE 9 /* ptrace or process_vm_writev of another process */
#define K_CLOCK 10 /* the realtime clock set */
#define K_HELPER 11 /* a kernel usermode-helper setting opened for writing */

#define V_DETECTED 0
#define V_KILLED 1
#define V_DENIED 2
#define V_ALLOWED 3

#define NAME_LEN 64
#define PATH_LEN 256
#define FULL_PATH 4096
#define ARGV_LEN 1024
#define NNAMES 64
#define NEXTS 32
#define NINTERP 16
#define LOADING_OPENS 256

const volatile u32 enforce = 0;
const volatile u64 window_ns = 300ULL * 1000000000ULL;
const volatile u32 verbose = 0;
/* Set when the BPF LSM program below is loaded: it denies the exec, so the
 * tracepoint must not also kill for the kinds the LSM decides. */
const volatile u32 lsm_deny = 0;
/* CLOCK_REALTIME - CLOCK_BOOTTIME at load, to compare inode times. */
const volatile u64 real_offset_ns = 0;
const volatile u32 fresh_rule = 1;
const volatile u32 anonymous_rule = 1;
/* Any exec of a listed interpreter in an armed tree, not only inline code. */
const volatile u32 interp_scripts = 1;
/* The sensor's own process, for reporting armed processes that signal it. */
const volatile u32 sensor_tgid = 0;

struct state {
	u32 flags;
	u32 origin_pid;
	u64 model_ts;  /* latest model open */
	u64 armed_ts;  /* first model open of this armed period */
	u32 loading_left;
	u32 pad;
	char model[PATH_LEN]; /* the tail of the latest model's path */
};

struct event {
	u32 kind;       /* EV_* */
	u32 pid;
	u32 ppid;
	u32 origin_pid;
	u32 verdict;    /* V_* */
	u32 what;       /* K_* for alerts, the signal for EV_SIGNAL */
	u64 ts;
	u64 model_ts;
	u32 uid;
	u32 gid;
	u64 cgroup_id;
	u64 ino;
	u32 dev;
	u32 argv_len;
	char comm[16];
	char name[NAME_LEN];     /* the executed file's name (alerts) */
	char filename[PATH_LEN]; /* the path given to exec (alerts) */
	char model[PATH_LEN];    /* tail of the latest model path (alerts) */
	char argv[ARGV_LEN];     /* NUL-separated, captured at exec (alerts) */
	char path[FULL_PATH];    /* full path of a model open (EV_MODEL) */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, u32);
	__type(value, struct state);
} states SEC(".maps");

/* Alerts and sensor signals: a ring of their own, so a flood of model
 * opens cannot crowd them out. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 23);
} events SEC(".maps");

/* Model opens and pickle loads. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 23);
} opens SEC(".maps");

/* Events that found their ring full: [0] alerts, [1] opens. User space
 * reports every increase, so nothing is enforced without a trace. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, u32);
	__type(value, u64);
} lost SEC(".maps");

static __always_inline void count_lost(u32 which)
{
	u64 *n = bpf_map_lookup_elem(&lost, &which);
	if (n)
		__sync_fetch_and_add(n, 1);
}

struct name16 {
	char s[16];
	u32 kind; /* K_SHELL or K_NETWORK */
	u32 prefix; /* match as a prefix (python3.11 for python) */
};

/* Filled by user space from the rule file. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NNAMES);
	__type(key, u32);
	__type(value, struct name16);
} names SEC(".maps");

struct ext32 {
	char s[32];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NEXTS);
	__type(key, u32);
	__type(value, struct ext32);
} exts SEC(".maps");

struct interp {
	char name[16];
	char inline_flags[8];  /* short options that take code: "e" */
	char value_flags[16];  /* short options that take a value: "IMm" */
	char long1[16];        /* long options that take code: "--eval" */
	char long2[16];
	u32 prefix;
	u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NINTERP);
	__type(key, u32);
	__type(value, struct interp);
} interps SEC(".maps");

struct file_id {
	u64 ino;
	u32 dev;
	u32 pad;
};

/* Executables by identity (hard links share it): value is a K_* kind. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct file_id);
	__type(value, u32);
} inodes SEC(".maps");

/* ELF fingerprints (see fingerprint()) of the shells found at start. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, u64);
	__type(value, u32);
} prints SEC(".maps");

/* Origins user space allowed (by program, command line, model, container):
 * 1 = for as long as it lives, 2 = until it opens another model. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, u32);
	__type(value, u32);
} allowed SEC(".maps");

/* Set once an armed process has set the realtime clock: inode times can
 * no longer tell fresh files, so from then on every exec in an armed tree
 * counts as fresh. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u32);
} tamper SEC(".maps");

/* Scratch buffers (too big for the BPF stack). */
struct scratch {
	char path[FULL_PATH];
	char argv[ARGV_LEN];
	char buf[256];
	struct state st;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct scratch);
} scratch_map SEC(".maps");

static __always_inline int starts_with(const char *s, const char *p, int n)
{
	for (int i = 0; i < n; i++) {
		if (s[i] != p[i])
			return 0;
	}
	return 1;
}

static __always_inline u64 now_ns(void)
{
	return bpf_ktime_get_boot_ns();
}

static __always_inline int is_armed(struct state *st, u64 now)
{
	if (!st)
		return 0;
	if (st->flags & F_DESC)
		return 1;
	if ((st->flags & ORIGIN) != ORIGIN)
		return 0;
	return now - st->model_ts <= window_ns;
}

struct base_ctx {
	char *buf;
	int len;
	int last;
};

/* Scan backwards from the end: stops at the last '/', so the cost is the
 * basename's length, not the path's. */
static long find_slash(u32 i, void *data)
{
	struct base_ctx *c = data;
	int k = c->len - 1 - (int)i;
	if (k < 0)
		return 1;
	if (c->buf[k & (FULL_PATH - 1)] == '/') {
		c->last = k + 1;
		return 1;
	}
	return 0;
}

struct suffix_ctx {
	const char *path; /* FULL_PATH buffer */
	int len;          /* length of the path */
	int base;         /* offset of the basename */
	int found;
};

/* Model suffixes are matched at the end of the full path, so names of any
 * length count; a suffix must lie within the basename. */
static long match_ext(u32 i, void *data)
{
	struct suffix_ctx *c = data;
	u32 k = i;
	struct ext32 *e = bpf_map_lookup_elem(&exts, &k);
	if (!e || e->s[0] == 0)
		return 1;
	int el = 0;
	for (int j = 0; j < 31; j++) {
		if (e->s[j] == 0)
			break;
		el++;
	}
	if (el == 0 || el > c->len - c->base)
		return 0;
	int off = c->len - el;
	for (int j = 0; j < 31; j++) {
		if (j >= el)
			break;
		if (c->path[(off + j) & (FULL_PATH - 1)] != e->s[j])
			return 0;
	}
	c->found = 1;
	return 1;
}

struct name_ctx {
	const char *name;
	u32 kind;
};

static long match_name(u32 i, void *data)
{
	struct name_ctx *c = data;
	u32 k = i;
	struct name16 *s = bpf_map_lookup_elem(&names, &k);
	if (!s || s->s[0] == 0)
		return 1;
	/* bpf_strncmp wants a read-only map; the lists are writable. */
	for (int j = 0; j < 16; j++) {
		if (s->s[j] == 0) {
			if (c->name[j] == 0 || s->prefix) {
				c->kind = s->kind;
				return 1;
			}
			return 0;
		}
		if (c->name[j] != s->s[j])
			return 0;
	}
	return 0;
}

/* The identity of an ELF's code, from the first 256 bytes the kernel read
 * for exec: the header fields the loader uses and up to three program
 * headers, without the fields it ignores (section headers, e_flags,
 * p_paddr). A copy, a rename or a copy with bytes appended keeps it.
 * Must match fingerprint() in bpf.rs. FNV-1a, 64 bits. */
struct fp_ctx {
	const char *buf;
	u64 h;
	u32 phoff;
};

static long fp_byte(u32 i, void *data)
{
	struct fp_ctx *c = data;
	u32 k = i;
	if (k < 16)
		return 0; /* e_ident: padding ignored by the loader */
	if (k >= 20 && k < 24)
		return 0; /* e_version: not checked by the kernel's loader */
	if (k >= 40 && k < 54)
		return 0; /* e_shoff, e_flags, e_ehsize */
	if (k >= 58 && k < 64)
		return 0; /* e_shentsize, e_shnum, e_shstrndx */
	if (k >= 64) {
		if (k < c->phoff)
			return 0;
		u32 r = (k - c->phoff) % 56;
		if (r >= 24 && r < 32)
			return 0; /* p_paddr */
	}
	c->h ^= (u8)c->buf[k & 255];
	c->h *= 0x100000001b3ULL;
	return 0;
}

static __always_inline u64 fingerprint(const char *buf)
{
	if (buf[0] != 0x7f || buf[1] != 'E' || buf[2] != 'L' || buf[3] != 'F' || buf[4] != 2)
		return 0;
	u32 phoff = 0;
	__builtin_memcpy(&phoff, &buf[32], 4); /* low half of e_phoff (ELF64, LE) */
	if (phoff < 64 || phoff > 255)
		phoff = 256;
	u32 end = phoff + 3 * 56;
	if (end > 256)
		end = 256;
	struct fp_ctx c = { .buf = buf, .h = 0xcbf29ce484222325ULL, .phoff = phoff };
	bpf_loop(end, fp_byte, &c, 0);
	return c.h;
}

/* Does this argv give the interpreter inline code? A small state machine
 * over the NUL-separated arguments: argv[0] is skipped; option clusters
 * ("-le") are read character by character; an option that takes a value
 * ends its cluster (and takes the next argument if the cluster ends with
 * it); the first non-option argument (the script) or "--" ends the search. */
struct argv_ctx {
	const char *buf;
	struct interp *ip;
	int len;
	int arg;
	int pos;
	int mode; /* 1 cluster, 2 skip to the end of this argument */
	int skip_next;
	int found;
};

static __always_inline int in_set(const char *set, int n, char c)
{
	for (int j = 0; j < n; j++) {
		if (set[j] == 0)
			return 0;
		if (set[j] == c)
			return 1;
	}
	return 0;
}

static __always_inline int long_is(const char *buf, int at, const char *opt)
{
	if (opt[0] == 0)
		return 0;
	for (int j = 0; j < 16; j++) {
		char o = opt[j];
		char b = buf[(at + j) & (ARGV_LEN - 1)];
		if (o == 0)
			return b == 0 || b == '=';
		if (b != o)
			return 0;
	}
	return 0;
}

static long argv_byte(u32 i, void *data)
{
	struct argv_ctx *c = data;
	int k = (int)i;
	if (k >= c->len)
		return 1;
	char ch = c->buf[k & (ARGV_LEN - 1)];
	if (ch == 0) {
		c->arg++;
		c->pos = 0;
		c->mode = 0;
		return 0;
	}
	if (c->pos == 0) {
		c->pos = 1;
		if (c->arg == 0 || c->skip_next) {
			c->skip_next = 0;
			c->mode = 2;
			return 0;
		}
		if (ch != '-')
			return 1; /* the script: what follows is its own */
		char n1 = c->buf[(k + 1) & (ARGV_LEN - 1)];
		if (n1 == '-') {
			char n2 = c->buf[(k + 2) & (ARGV_LEN - 1)];
			if (n2 == 0)
				return 1; /* "--" */
			if (long_is(c->buf, k, c->ip->long1) || long_is(c->buf, k, c->ip->long2)) {
				c->found = 1;
				return 1;
			}
			c->mode = 2;
			return 0;
		}
		c->mode = 1;
		return 0;
	}
	c->pos++;
	if (c->mode != 1)
		return 0;
	if (in_set(c->ip->inline_flags, 8, ch)) {
		c->found = 1;
		return 1;
	}
	if (in_set(c->ip->value_flags, 16, ch)) {
		if (c->buf[(k + 1) & (ARGV_LEN - 1)] == 0)
			c->skip_next = 1;
		c->mode = 2;
	}
	return 0;
}

struct interp_ctx {
	const char *name;
	int index;
};

static long match_interp(u32 i, void *data)
{
	struct interp_ctx *c = data;
	u32 k = i;
	struct interp *ip = bpf_map_lookup_elem(&interps, &k);
	if (!ip || ip->name[0] == 0)
		return 1;
	for (int j = 0; j < 16; j++) {
		if (ip->name[j] == 0) {
			if (c->name[j] == 0 || ip->prefix) {
				c->index = (int)i;
				return 1;
			}
			return 0;
		}
		if (c->name[j] != ip->name[j])
			return 0;
	}
	return 0;
}

/* argv of the current (just exec'd) process, from its new mm. */
static __always_inline int read_argv(char *dst)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	unsigned long start = BPF_CORE_READ(t, mm, arg_start);
	unsigned long end = BPF_CORE_READ(t, mm, arg_end);
	if (end <= start)
		return 0;
	unsigned long n = end - start;
	if (n > ARGV_LEN - 1)
		n = ARGV_LEN - 1;
	if (bpf_probe_read_user(dst, n & (ARGV_LEN - 1), (const void *)start) != 0)
		return 0;
	dst[n & (ARGV_LEN - 1)] = 0;
	return (int)n;
}

static __always_inline void fill_common(struct event *e, u32 kind, struct state *st)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	u64 ug = bpf_get_current_uid_gid();
	e->kind = kind;
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->ppid = BPF_CORE_READ(t, real_parent, tgid);
	e->origin_pid = st ? st->origin_pid : 0;
	e->ts = now_ns();
	e->model_ts = st ? st->model_ts : 0;
	e->uid = (u32)ug;
	e->gid = ug >> 32;
	e->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	if (st)
		bpf_probe_read_kernel_str(e->model, sizeof(e->model), st->model);
	else
		e->model[0] = 0;
}

/* The kind recorded for this executable's identity: its inode (hard links
 * share it), else its ELF fingerprint (copies and renames keep it). */
static __always_inline u32 identity_kind(struct linux_binprm *bprm, struct scratch *sc)
{
	struct file_id id = {};
	struct inode *ino = BPF_CORE_READ(bprm, file, f_inode);
	id.ino = BPF_CORE_READ(ino, i_ino);
	id.dev = BPF_CORE_READ(ino, i_sb, s_dev);
	u32 *k = bpf_map_lookup_elem(&inodes, &id);
	if (k)
		return *k;
	bpf_probe_read_kernel(sc->buf, sizeof(sc->buf), &bprm->buf);
	u64 fp = fingerprint(sc->buf);
	if (fp) {
		u32 *pk = bpf_map_lookup_elem(&prints, &fp);
		if (pk)
			return *pk;
	}
	return 0;
}

/* Classify an exec by an armed process. Returns a K_* kind or 0. `argv` is
 * filled when an interpreter's options had to be read. */
static __always_inline u32 classify(struct linux_binprm *bprm, struct state *st, const char *name,
				    struct scratch *sc, int *argv_len, int may_read_argv, u32 idk)
{
	struct inode *ino = BPF_CORE_READ(bprm, file, f_inode);
	if (anonymous_rule && BPF_CORE_READ(ino, __i_nlink) == 0)
		return K_ANONYMOUS;
	if (idk && idk != K_PYTHON)
		return idk;
	struct name_ctx nc = { .name = name, .kind = 0 };
	bpf_loop(NNAMES, match_name, &nc, 0);
	if (nc.kind)
		return nc.kind;
	u32 z0 = 0;
	u32 *tampered = bpf_map_lookup_elem(&tamper, &z0);
	if (fresh_rule && tampered && *tampered)
		return K_FRESH;
	if (fresh_rule && bpf_core_field_exists(ino->i_ctime_sec)) {
		s64 sec = BPF_CORE_READ(ino, i_ctime_sec);
		u32 nsec = BPF_CORE_READ(ino, i_ctime_nsec);
		u64 ctime = (u64)sec * 1000000000ULL + nsec;
		/* 2 s of tolerance for coarse file-system clocks. */
		if (ctime + 2000000000ULL >= st->armed_ts + real_offset_ns)
			return K_FRESH;
	}
	if (may_read_argv) {
		struct interp_ctx ic = { .name = name, .index = -1 };
		bpf_loop(NINTERP, match_interp, &ic, 0);
		if (ic.index >= 0) {
			u32 key = (u32)ic.index;
			struct interp *ip = bpf_map_lookup_elem(&interps, &key);
			if (ip) {
				int n = read_argv(sc->argv);
				*argv_len = n;
				struct argv_ctx ac = { .buf = sc->argv, .ip = ip, .len = n };
				bpf_loop(ARGV_LEN, argv_byte, &ac, 0);
				if (ac.found)
					return K_INLINE;
			}
		}
		/* Not inline code: a script (`perl x.pl`, or a #! script whose
		 * interpreter this is), which may be a payload's dropped file. */
		if (ic.index >= 0 && interp_scripts)
			return K_INTERP;
	}
	return 0;
}

static __always_inline void emit_alert(struct state *st, struct linux_binprm *bprm, const char *name,
				       u32 what, u32 verdict, struct scratch *sc, int argv_len)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_lost(0);
		return;
	}
	fill_common(e, EV_ALERT, st);
	e->verdict = verdict;
	e->what = what;
	struct inode *ino = BPF_CORE_READ(bprm, file, f_inode);
	e->ino = BPF_CORE_READ(ino, i_ino);
	e->dev = BPF_CORE_READ(ino, i_sb, s_dev);
	bpf_probe_read_kernel_str(e->name, sizeof(e->name), name);
	const char *fname = BPF_CORE_READ(bprm, filename);
	bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), fname);
	if (argv_len < 0)
		argv_len = read_argv(sc->argv);
	e->argv_len = argv_len > 0 ? (u32)argv_len : 0;
	bpf_probe_read_kernel(e->argv, sizeof(e->argv), sc->argv);
	e->path[0] = 0;
	bpf_ringbuf_submit(e, 0);
}

/* An alert for a syscall (no exec): `detail` is a path or empty. */
static __always_inline void syscall_alert(struct state *st, u32 what, const char *detail, u32 detail_user)
{
	u32 verdict = V_DETECTED;
	u32 origin = st->origin_pid;
	if (bpf_map_lookup_elem(&allowed, &origin))
		verdict = V_ALLOWED;
	else if (enforce) {
		/* The syscall itself still completes; the process dies before it
		 * returns to user space, so nothing after it runs. */
		bpf_send_signal(9);
		verdict = V_KILLED;
	}
	if (verdict == V_ALLOWED && !verbose)
		return;
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_lost(0);
		return;
	}
	fill_common(e, EV_ALERT, st);
	e->verdict = verdict;
	e->what = what;
	e->ino = 0;
	e->dev = 0;
	e->argv_len = 0;
	e->argv[0] = 0;
	e->name[0] = 0;
	e->path[0] = 0;
	if (detail_user)
		bpf_probe_read_user_str(e->filename, sizeof(e->filename), detail);
	else
		bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), detail);
	bpf_ringbuf_submit(e, 0);
}

static __always_inline struct state *armed_current(void)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct state *st = bpf_map_lookup_elem(&states, &tgid);
	return is_armed(st, now_ns()) ? st : 0;
}

/* ptrace that acts on another process (not PTRACE_TRACEME). */
SEC("tp/syscalls/sys_enter_ptrace")
int on_ptrace(struct trace_event_raw_sys_enter *ctx)
{
	if (ctx->args[0] == 0)
		return 0;
	struct state *st = armed_current();
	if (st)
		syscall_alert(st, K_PTRACE, "ptrace", 0);
	return 0;
}

SEC("tp/syscalls/sys_enter_process_vm_writev")
int on_vm_writev(struct trace_event_raw_sys_enter *ctx)
{
	struct state *st = armed_current();
	if (st)
		syscall_alert(st, K_PTRACE, "process_vm_writev", 0);
	return 0;
}

static __always_inline int clock_change(void)
{
	struct state *st = armed_current();
	if (!st)
		return 0;
	u32 z0 = 0, one = 1;
	bpf_map_update_elem(&tamper, &z0, &one, BPF_ANY);
	syscall_alert(st, K_CLOCK, "clock", 0);
	return 0;
}

SEC("tp/syscalls/sys_enter_clock_settime")
int on_clock_settime(struct trace_event_raw_sys_enter *ctx)
{
	if (ctx->args[0] != 0) /* CLOCK_REALTIME */
		return 0;
	return clock_change();
}

SEC("tp/syscalls/sys_enter_settimeofday")
int on_settimeofday(struct trace_event_raw_sys_enter *ctx)
{
	if (ctx->args[0] == 0) /* only a timezone */
		return 0;
	return clock_change();
}

/* adjtimex/clock_adjtime with any mode bit set can step the clock
 * (ADJ_SETOFFSET); a read (modes == 0) is harmless. */
static __always_inline int adjtime_modes(const void *utx)
{
	u32 modes = 0;
	bpf_probe_read_user(&modes, sizeof(modes), utx);
	return modes != 0;
}

SEC("tp/syscalls/sys_enter_clock_adjtime")
int on_clock_adjtime(struct trace_event_raw_sys_enter *ctx)
{
	if (ctx->args[0] != 0 || !adjtime_modes((const void *)ctx->args[1]))
		return 0;
	return clock_change();
}

SEC("tp/syscalls/sys_enter_adjtimex")
int on_adjtimex(struct trace_event_raw_sys_enter *ctx)
{
	if (!adjtime_modes((const void *)ctx->args[0]))
		return 0;
	return clock_change();
}

/* Kernel usermode-helper settings: writing one makes the kernel run a
 * program outside every process tree (core_pattern on a crash, modprobe,
 * uevent_helper, poweroff_cmd, binfmt_misc registrations), and
 * /proc/PID/mem of another process. By name, opened for writing. */
static __always_inline int helper_name(const char *n)
{
	return starts_with(n, "core_pattern", 13) || starts_with(n, "modprobe", 9) ||
	       starts_with(n, "uevent_helper", 14) || starts_with(n, "poweroff_cmd", 13) ||
	       starts_with(n, "register", 9) || starts_with(n, "mem", 4) ||
	       starts_with(n, "core_uses_pid", 14);
}

/* The current directory as dentry names, leaf first, NUL-separated, up to
 * the root of its file system (user space adds the mount point): a relative
 * model path is resolved even when the process is gone (killed) before user
 * space reads /proc. */
struct cwd_ctx {
	struct dentry *d;
	char *buf;
	u32 off;
};

static long cwd_step(u32 i, void *data)
{
	struct cwd_ctx *c = data;
	struct dentry *d = c->d; /* a local: CO-RE relocates kernel types only */
	struct dentry *parent = BPF_CORE_READ(d, d_parent);
	if (!parent || parent == d || c->off >= ARGV_LEN - 64)
		return 1;
	const unsigned char *n = BPF_CORE_READ(d, d_name.name);
	long k = bpf_probe_read_kernel_str(c->buf + (c->off & (ARGV_LEN - 1)), 64, n);
	if (k <= 0)
		return 1;
	c->off += (u32)k;
	c->d = parent;
	return 0;
}

static __always_inline u32 read_cwd(char *buf, u32 *dev)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	struct dentry *d = BPF_CORE_READ(t, fs, pwd.dentry);
	if (!d)
		return 0;
	*dev = BPF_CORE_READ(d, d_sb, s_dev);
	struct cwd_ctx c = { .d = d, .buf = buf, .off = 0 };
	bpf_loop(48, cwd_step, &c, 0);
	return c.off;
}

/* open(2) and openat2(2) also open files: the kernel-helper rule must not
 * be one syscall away from a bypass (`syscall(SYS_open, "core_pattern", O_WRONLY)`). */
static __always_inline int helper_open(const char *upath, long flags)
{
	if ((flags & 3) == 0)
		return 0;
	struct state *st = armed_current();
	if (!st)
		return 0;
	u32 zero = 0;
	struct scratch *sc = bpf_map_lookup_elem(&scratch_map, &zero);
	if (!sc)
		return 0;
	long n = bpf_probe_read_user_str(sc->path, sizeof(sc->path), upath);
	if (n <= 1)
		return 0;
	struct base_ctx bc = { .buf = sc->path, .len = (int)(n - 1), .last = 0 };
	bpf_loop(n - 1, find_slash, &bc, 0);
	char name[NAME_LEN] = {};
	bpf_probe_read_kernel_str(name, sizeof(name), sc->path + (bc.last & (FULL_PATH - 1)));
	if (helper_name(name))
		syscall_alert(st, K_HELPER, sc->path, 0);
	return 0;
}

SEC("tp/syscalls/sys_enter_open")
int on_open(struct trace_event_raw_sys_enter *ctx)
{
	return helper_open((const char *)ctx->args[0], (long)ctx->args[1]);
}

SEC("tp/syscalls/sys_enter_openat2")
int on_openat2(struct trace_event_raw_sys_enter *ctx)
{
	u64 how_flags = 0; /* struct open_how starts with u64 flags */
	bpf_probe_read_user(&how_flags, sizeof(how_flags), (const void *)ctx->args[2]);
	return helper_open((const char *)ctx->args[1], (long)how_flags);
}

SEC("tp/syscalls/sys_enter_openat")
int on_openat(struct trace_event_raw_sys_enter *ctx)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct state *st = bpf_map_lookup_elem(&states, &tgid);
	if (!st || !(st->flags & (F_PYTHON | F_LOADING | F_DESC | F_MODEL)))
		return 0;
	u32 zero = 0;
	struct scratch *sc = bpf_map_lookup_elem(&scratch_map, &zero);
	if (!sc)
		return 0;
	const char *upath = (const char *)ctx->args[1];
	long n = bpf_probe_read_user_str(sc->path, sizeof(sc->path), upath);
	if (n <= 1)
		return 0;
	int len = (int)(n - 1);
	struct base_ctx bc = { .buf = sc->path, .len = len, .last = 0 };
	bpf_loop(len, find_slash, &bc, 0);
	int b = bc.last & (FULL_PATH - 1);
	char name[NAME_LEN] = {};
	bpf_probe_read_kernel_str(name, sizeof(name), sc->path + b);
	long flags = (long)ctx->args[2];
	if ((flags & 3) != 0 && helper_name(name) && is_armed(st, now_ns())) {
		syscall_alert(st, K_HELPER, sc->path, 0);
		return 0;
	}
	if (!(st->flags & (F_PYTHON | F_LOADING)))
		return 0;
	if (st->flags & F_LOADING) {
		/* An embedded interpreter: the dynamic loader opens libpython. */
		if (starts_with(name, "libpython", 9)) {
			st->flags = (st->flags & ~F_LOADING) | F_PYTHON;
			return 0;
		}
		if (st->loading_left > 0)
			st->loading_left--;
		if (st->loading_left == 0) {
			st->flags &= ~F_LOADING;
			if (st->flags == 0)
				bpf_map_delete_elem(&states, &tgid);
		}
		if (!(st->flags & F_PYTHON))
			return 0;
	}
	if (!(st->flags & F_PICKLE)) {
		/* pickle.cpython-311.pyc, pickle.py, _pickle.cpython-311-x86_64-linux-gnu.so */
		if (starts_with(name, "pickle.", 7) || starts_with(name, "_pickle.", 8)) {
			st->flags |= F_PICKLE;
			/* Always sent (once per interpreter): user space reads the
			 * process's exe and command line now, while it surely lives; a
			 * load that spawns a shell and exits at once may be gone (or
			 * half torn down) by the time its model or alert event is read. */
			struct event *e = bpf_ringbuf_reserve(&opens, sizeof(*e), 0);
			if (!e)
				count_lost(1);
			if (e) {
				fill_common(e, EV_PICKLE, st);
				e->verdict = 0;
				e->what = 0;
				bpf_probe_read_kernel_str(e->name, sizeof(e->name), name);
				e->path[0] = 0;
				e->argv_len = 0;
				bpf_ringbuf_submit(e, 0);
			}
		}
		return 0;
	}
	struct suffix_ctx xc = { .path = sc->path, .len = len, .base = b, .found = 0 };
	bpf_loop(NEXTS, match_ext, &xc, 0);
	if (!xc.found)
		return 0;
	/* site-packages .pth files are read by every Python at start: not models. */
	if (len > 4 && sc->path[(len - 4) & (FULL_PATH - 1)] == '.' && sc->path[(len - 3) & (FULL_PATH - 1)] == 'p' &&
	    sc->path[(len - 2) & (FULL_PATH - 1)] == 't' && sc->path[(len - 1) & (FULL_PATH - 1)] == 'h') {
		for (int i = 0; i + 13 < PATH_LEN; i++) {
			if (i >= b)
				break;
			if (sc->path[i] == 's' && starts_with(&sc->path[i], "site-packages", 13))
				return 0;
		}
	}
	u64 now = now_ns();
	if (!is_armed(st, now) || !(st->flags & F_MODEL))
		st->armed_ts = now;
	st->flags |= F_MODEL;
	st->model_ts = now;
	/* A process armed by an ancestor keeps that ancestor as its origin:
	 * allowances and attribution follow the tree, so a payload cannot start
	 * a fresh "origin" that matches an allowance. */
	if (!(st->flags & F_DESC) || st->origin_pid == 0)
		st->origin_pid = tgid;
	u32 origin = st->origin_pid;
	/* Keep the tail of long paths: the name is what identifies the model. */
	int from = len > PATH_LEN - 1 ? len - (PATH_LEN - 1) : 0;
	bpf_probe_read_kernel_str(st->model, sizeof(st->model), sc->path + (from & (FULL_PATH - 1)));
	/* An allowance that depended on the model ends with a new model: user
	 * space re-grants it after judging this one (fail closed meanwhile). */
	u32 *al = bpf_map_lookup_elem(&allowed, &origin);
	if (al && *al == 2)
		bpf_map_delete_elem(&allowed, &origin);
	struct event *e = bpf_ringbuf_reserve(&opens, sizeof(*e), 0);
	if (!e) {
		count_lost(1);
		return 0;
	}
	fill_common(e, EV_MODEL, st);
	e->verdict = 0;
	e->what = (u32)(int)ctx->args[0]; /* the directory fd a relative path is under */
	e->argv_len = 0;
	e->dev = 0;
	if (sc->path[0] != '/') {
		u32 dev = 0;
		u32 n = read_cwd(sc->argv, &dev);
		if (n > 0 && n < ARGV_LEN) {
			bpf_probe_read_kernel(e->argv, sizeof(e->argv), sc->argv);
			e->argv_len = n;
			e->dev = dev;
		}
	}
	bpf_probe_read_kernel_str(e->name, sizeof(e->name), name);
	bpf_probe_read_kernel_str(e->path, sizeof(e->path), sc->path);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	u32 zero = 0;
	struct scratch *sc = bpf_map_lookup_elem(&scratch_map, &zero);
	if (!sc)
		return 0;
	char name[NAME_LEN] = {};
	const unsigned char *np = BPF_CORE_READ(bprm, file, f_path.dentry, d_name.name);
	bpf_probe_read_kernel_str(name, sizeof(name), np);
	struct state *st = bpf_map_lookup_elem(&states, &tgid);
	u64 now = now_ns();
	int armed = is_armed(st, now);
	u32 idk = identity_kind(bprm, sc);
	/* An interpreter by name or by the identity of the Pythons found at
	 * start (a renamed copy of python3 is still Python). */
	int py = starts_with(name, "python", 6) || idk == K_PYTHON;
	if (st && armed) {
		int argv_len = -1;
		sc->argv[0] = 0;
		u32 what = classify(bprm, st, name, sc, &argv_len, 1, idk);
		/* With the LSM hook loaded it has already refused every kind but
		 * the one that needs the new argv. */
		if (what && (!lsm_deny || what == K_INLINE)) {
			u32 verdict = V_DETECTED;
			u32 origin = st->origin_pid;
			if (bpf_map_lookup_elem(&allowed, &origin))
				verdict = V_ALLOWED;
			else if (enforce) {
				bpf_send_signal(9);
				verdict = V_KILLED;
			}
			if (verdict != V_ALLOWED || verbose)
				emit_alert(st, bprm, name, what, verdict, sc, argv_len);
		}
		/* Armed through the exec, whatever the new image. */
		st->flags = F_DESC | (py ? F_PYTHON : F_LOADING);
		st->loading_left = LOADING_OPENS;
		return 0;
	}
	__builtin_memset(&sc->st, 0, sizeof(sc->st));
	if (py) {
		sc->st.flags = F_PYTHON;
	} else {
		sc->st.flags = F_LOADING;
		sc->st.loading_left = LOADING_OPENS;
	}
	bpf_map_update_elem(&states, &tgid, &sc->st, BPF_ANY);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child)
{
	u32 ppid = BPF_CORE_READ(parent, tgid);
	u32 cpid = BPF_CORE_READ(child, pid);
	u32 ctgid = BPF_CORE_READ(child, tgid);
	if (cpid != ctgid)
		return 0; /* a thread, not a process */
	struct state *st = bpf_map_lookup_elem(&states, &ppid);
	if (!st)
		return 0;
	if (!is_armed(st, now_ns())) {
		bpf_map_update_elem(&states, &ctgid, st, BPF_ANY);
		return 0;
	}
	u32 zero = 0;
	struct scratch *sc = bpf_map_lookup_elem(&scratch_map, &zero);
	if (!sc)
		return 0;
	__builtin_memcpy(&sc->st, st, sizeof(sc->st));
	sc->st.flags |= F_DESC;
	if (bpf_map_update_elem(&states, &ctgid, &sc->st, BPF_ANY) != 0) {
		/* The table is full: the child of an armed process would go
		 * untracked. Report it as an alert of its own. */
		count_lost(0);
	}
	return 0;
}

SEC("tp/sched/sched_process_exit")
int on_exit(struct trace_event_raw_sched_process_exit *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32;
	/* Forget a process only when its last thread exits: a main thread
	 * that calls exit(2) while others run must not drop the state. */
	if (bpf_core_field_exists(ctx->group_dead)) {
		if (!BPF_CORE_READ(ctx, group_dead))
			return 0;
	} else if ((u32)id != tgid) {
		return 0;
	}
	bpf_map_delete_elem(&states, &tgid);
	bpf_map_delete_elem(&allowed, &tgid);
	return 0;
}

/* An armed process that signals the sensor is reported (and, enforcing,
 * killed: the pinned programs keep enforcing after the sensor dies, and
 * the event waits in the pinned ring buffer for the next reader). */
SEC("tp_btf/signal_generate")
int BPF_PROG(on_signal, int sig, struct kernel_siginfo *info, struct task_struct *task, int group, int result)
{
	if (sensor_tgid == 0 || BPF_CORE_READ(task, tgid) != (int)sensor_tgid)
		return 0;
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (tgid == sensor_tgid)
		return 0;
	struct state *st = bpf_map_lookup_elem(&states, &tgid);
	if (!is_armed(st, now_ns()))
		return 0;
	u32 verdict = V_DETECTED;
	if (enforce) {
		bpf_send_signal(9);
		verdict = V_KILLED;
	}
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_lost(0);
		return 0;
	}
	fill_common(e, EV_SIGNAL, st);
	e->verdict = verdict;
	e->what = (u32)sig;
	e->argv_len = 0;
	e->path[0] = 0;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* Strongest enforcement: refuse the exec itself (-EPERM) before the new
 * program is loaded. Only loaded when the kernel allows BPF LSM programs;
 * otherwise the loader falls back to the kill at exec above. */
SEC("lsm/bprm_check_security")
int BPF_PROG(deny_exec, struct linux_binprm *bprm, int ret)
{
	if (ret != 0)
		return ret;
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct state *st = bpf_map_lookup_elem(&states, &tgid);
	if (!is_armed(st, now_ns()))
		return 0;
	u32 zero = 0;
	struct scratch *sc = bpf_map_lookup_elem(&scratch_map, &zero);
	if (!sc)
		return 0;
	char name[NAME_LEN] = {};
	const unsigned char *np = BPF_CORE_READ(bprm, file, f_path.dentry, d_name.name);
	bpf_probe_read_kernel_str(name, sizeof(name), np);
	int argv_len = 0;
	sc->argv[0] = 0;
	/* The new argv is not mapped yet: inline code is judged at exec. */
	u32 what = classify(bprm, st, name, sc, &argv_len, 0, identity_kind(bprm, sc));
	if (!what)
		return 0;
	u32 origin = st->origin_pid;
	if (bpf_map_lookup_elem(&allowed, &origin))
		return 0;
	emit_alert(st, bprm, name, what, V_DENIED, sc, 0);
	return -1; /* -EPERM */
}

/* A TCP socket that starts listening. Sent through the alert ring; smaller
 * than struct event (user space reads `kind` first). */
#define LISTEN_WORDS 8
struct listen_event {
	u32 kind;       /* EV_LISTEN */
	u32 pid;        /* tgid */
	u32 tid;        /* the thread that called listen(2) */
	u32 ppid;
	u32 uid;
	u32 gid;
	u64 ts;
	u64 cgroup_id;
	u16 family;     /* AF_INET, AF_INET6 */
	u16 port;       /* host order; 0 when listen(2) picks the port */
	u32 flags;      /* the process's F_* state */
	u8 addr[16];    /* the bound address (4 bytes for AF_INET) */
	char comm[16];  /* the calling thread's name */
	u64 ip;         /* user instruction pointer at the syscall (in libc) */
	u64 stack[LISTEN_WORDS]; /* the top of the user stack: libc's listen()
				  * is a leaf, so [0] is the return address into
				  * its caller */
};

/* inet_csk_listen_start() stores TCP_LISTEN through inet_sk_state_store(),
 * which fires this tracepoint in the listening thread's context (before
 * the port is finally taken: user space confirms the listener in /proc). */
SEC("tp/sock/inet_sock_set_state")
int on_listen(struct trace_event_raw_inet_sock_set_state *ctx)
{
	if (ctx->newstate != 10 /* TCP_LISTEN */ || ctx->protocol != 6 /* IPPROTO_TCP */)
		return 0;
	struct listen_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_lost(0);
		return 0;
	}
	u64 id = bpf_get_current_pid_tgid();
	u64 ug = bpf_get_current_uid_gid();
	struct task_struct *t = bpf_get_current_task_btf();
	u32 tgid = id >> 32;
	e->kind = EV_LISTEN;
	e->pid = tgid;
	e->tid = (u32)id;
	e->ppid = BPF_CORE_READ(t, real_parent, tgid);
	e->uid = (u32)ug;
	e->gid = ug >> 32;
	e->ts = now_ns();
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->family = ctx->family;
	e->port = ctx->sport;
	struct state *st = bpf_map_lookup_elem(&states, &tgid);
	e->flags = st ? st->flags : 0;
	__builtin_memset(e->addr, 0, sizeof(e->addr));
	if (ctx->family == 2)
		bpf_probe_read_kernel(e->addr, 4, ctx->saddr);
	else
		bpf_probe_read_kernel(e->addr, 16, ctx->saddr_v6);
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(t);
	e->ip = BPF_CORE_READ(regs, ip);
	unsigned long sp = BPF_CORE_READ(regs, sp);
	if (bpf_probe_read_user(e->stack, sizeof(e->stack), (const void *)sp) != 0)
		__builtin_memset(e->stack, 0, sizeof(e->stack));
	bpf_ringbuf_submit(e, 0);
	return 0;
}

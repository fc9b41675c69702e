// SPDX-License-Identifier: GPL-2.0
/* pickguard watch: follow each process through "pickle module loaded ->
 * model file opened -> shell executed" and report (or kill) the shell.
 *
 * State per thread group (tgid): PYTHON (its image is python*), PICKLE
 * (opened pickle*.pyc / _pickle*.so), MODEL (then opened a model file).
 * Children inherit their parent's state at fork, because a payload's shell
 * is exec'd by a forked child. An exec resets the state for the new image,
 * after checking whether an armed process is becoming a shell. */
#include "vmlinux_min.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

#define F_PYTHON 1
#define F_PICKLE 2
#define F_MODEL 4
#define ARMED (F_PYTHON | F_PICKLE | F_MODEL)

#define EV_PICKLE 1
#define EV_MODEL 2
#define EV_ALERT 3

#define NAME_LEN 64
#define PATH_LEN 256
#define NSHELLS 16
#define NEXTS 16

const volatile u32 enforce = 0;
const volatile u64 window_ns = 300ULL * 1000000000ULL;
const volatile u32 verbose = 0;
/* Set when the BPF LSM program below is loaded: it denies the exec, so the
 * tracepoint must not also kill. */
const volatile u32 lsm_deny = 0;

struct state {
	u32 flags;
	u32 origin_pid;
	u64 model_ts;
	char model[PATH_LEN];
};

struct event {
	u32 kind;
	u32 pid;
	u32 ppid;
	u32 origin_pid;
	u32 killed;
	u32 pad;
	u64 ts;
	u64 model_ts;
	char comm[16];
	char name[NAME_LEN];
	char model[PATH_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, u32);
	__type(value, struct state);
} states SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 18);
} events SEC(".maps");

struct name16 {
	char s[16];
};

/* Filled by user space: shell basenames and model file suffixes. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NSHELLS);
	__type(key, u32);
	__type(value, struct name16);
} shells SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NEXTS);
	__type(key, u32);
	__type(value, struct name16);
} exts SEC(".maps");

/* Scratch buffers (too big for the BPF stack). */
struct scratch {
	char path[PATH_LEN];
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
	if (c->buf[k & (PATH_LEN - 1)] == '/') {
		c->last = k + 1;
		return 1;
	}
	return 0;
}

struct suffix_ctx {
	const char *name;
	int len;
	int found;
};

static long match_ext(u32 i, void *data)
{
	struct suffix_ctx *c = data;
	u32 k = i;
	struct name16 *e = bpf_map_lookup_elem(&exts, &k);
	if (!e || e->s[0] == 0)
		return 1;
	int el = 0;
	for (int j = 0; j < 15; j++) {
		if (e->s[j] == 0)
			break;
		el++;
	}
	if (el == 0 || el > c->len)
		return 0;
	int off = c->len - el;
	for (int j = 0; j < 15; j++) {
		if (j >= el)
			break;
		if (c->name[(off + j) & (NAME_LEN - 1)] != e->s[j])
			return 0;
	}
	c->found = 1;
	return 1;
}

struct shell_ctx {
	const char *name;
	int found;
};

static long match_shell(u32 i, void *data)
{
	struct shell_ctx *c = data;
	u32 k = i;
	struct name16 *s = bpf_map_lookup_elem(&shells, &k);
	if (!s || s->s[0] == 0)
		return 1;
	/* bpf_strncmp wants a read-only map; the shell list is writable. */
	for (int j = 0; j < 16; j++) {
		if (c->name[j] != s->s[j])
			return 0;
		if (s->s[j] == 0)
			break;
	}
	c->found = 1;
	return 1;
}

static __always_inline void emit(u32 kind, struct state *st, const char *name, u32 killed)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return;
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	e->kind = kind;
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->ppid = BPF_CORE_READ(t, real_parent, tgid);
	e->origin_pid = st ? st->origin_pid : 0;
	e->killed = killed;
	e->pad = 0;
	e->ts = bpf_ktime_get_ns();
	e->model_ts = st ? st->model_ts : 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_probe_read_kernel_str(e->name, sizeof(e->name), name);
	if (st)
		bpf_probe_read_kernel_str(e->model, sizeof(e->model), st->model);
	else
		e->model[0] = 0;
	bpf_ringbuf_submit(e, 0);
}

SEC("tp/syscalls/sys_enter_openat")
int on_openat(struct trace_event_raw_sys_enter *ctx)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct state *st = bpf_map_lookup_elem(&states, &tgid);
	/* Only Python processes, and only until they are armed: once the
	 * pickle module is loaded and a model opened, later opens change nothing. */
	if (!st || !(st->flags & F_PYTHON) || (st->flags & ARMED) == ARMED)
		return 0;
	u32 zero = 0;
	struct scratch *sc = bpf_map_lookup_elem(&scratch_map, &zero);
	if (!sc)
		return 0;
	const char *upath = (const char *)ctx->args[1];
	long n = bpf_probe_read_user_str(sc->path, sizeof(sc->path), upath);
	if (n <= 1)
		return 0;
	struct base_ctx bc = { .buf = sc->path, .len = (int)(n - 1), .last = 0 };
	bpf_loop(n - 1, find_slash, &bc, 0);
	int b = bc.last & (PATH_LEN - 1);
	char name[NAME_LEN] = {};
	bpf_probe_read_kernel_str(name, sizeof(name), sc->path + b);
	if (!(st->flags & F_PICKLE)) {
		/* pickle.cpython-311.pyc, pickle.py, _pickle.cpython-311-x86_64-linux-gnu.so */
		if (starts_with(name, "pickle.", 7) || starts_with(name, "_pickle.", 8)) {
			st->flags |= F_PICKLE;
			if (verbose)
				emit(EV_PICKLE, st, name, 0);
		}
		return 0;
	}
	int len = n - 1 - b;
	if (len <= 0 || len >= NAME_LEN)
		return 0;
	struct suffix_ctx xc = { .name = name, .len = len, .found = 0 };
	bpf_loop(NEXTS, match_ext, &xc, 0);
	if (!xc.found)
		return 0;
	/* site-packages .pth files are read by every Python at start: not models. */
	if (len > 4 && name[(len - 4) & (NAME_LEN - 1)] == '.' && name[(len - 3) & (NAME_LEN - 1)] == 'p' &&
	    name[(len - 2) & (NAME_LEN - 1)] == 't' && name[(len - 1) & (NAME_LEN - 1)] == 'h') {
		/* a .pth inside .../site-packages/ is a path configuration file */
		for (int i = 0; i + 13 < PATH_LEN; i++) {
			if (i >= b)
				break;
			if (sc->path[i] == 's' && starts_with(&sc->path[i], "site-packages", 13))
				return 0;
		}
	}
	st->flags |= F_MODEL;
	st->model_ts = bpf_ktime_get_ns();
	st->origin_pid = tgid;
	bpf_probe_read_kernel_str(st->model, sizeof(st->model), sc->path);
	if (verbose)
		emit(EV_MODEL, st, name, 0);
	return 0;
}

SEC("tp/sched/sched_process_exec")
int on_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	char name[NAME_LEN] = {};
	const unsigned char *np = BPF_CORE_READ(t, mm, exe_file, f_path.dentry, d_name.name);
	bpf_probe_read_kernel_str(name, sizeof(name), np);
	struct state *st = bpf_map_lookup_elem(&states, &tgid);
	if (st && (st->flags & ARMED) == ARMED && bpf_ktime_get_ns() - st->model_ts <= window_ns) {
		struct shell_ctx sh = { .name = name, .found = 0 };
		bpf_loop(NSHELLS, match_shell, &sh, 0);
		if (sh.found) {
			u32 killed = 0;
			if (enforce && !lsm_deny) {
				bpf_send_signal(9);
				killed = 1;
			}
			if (!lsm_deny)
				emit(EV_ALERT, st, name, killed);
		}
	}
	/* New image: reset. */
	if (starts_with(name, "python", 6)) {
		u32 zero = 0;
		struct scratch *sc = bpf_map_lookup_elem(&scratch_map, &zero);
		if (!sc)
			return 0;
		__builtin_memset(&sc->st, 0, sizeof(sc->st));
		sc->st.flags = F_PYTHON;
		bpf_map_update_elem(&states, &tgid, &sc->st, BPF_ANY);
	} else if (st) {
		bpf_map_delete_elem(&states, &tgid);
	}
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
	bpf_map_update_elem(&states, &ctgid, st, BPF_ANY);
	return 0;
}

SEC("tp/sched/sched_process_exit")
int on_exit(struct trace_event_raw_sched_process_template *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32;
	if ((u32)id != tgid)
		return 0;
	bpf_map_delete_elem(&states, &tgid);
	return 0;
}

/* Strongest enforcement: refuse the exec itself (-EPERM) before the new
 * program is loaded. Only loaded when the kernel allows BPF LSM programs;
 * otherwise the loader falls back to the kill at exec above. */
SEC("lsm/bprm_check_security")
int BPF_PROG(deny_shell_exec, struct linux_binprm *bprm, int ret)
{
	if (ret != 0)
		return ret;
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct state *st = bpf_map_lookup_elem(&states, &tgid);
	if (!st || (st->flags & ARMED) != ARMED || bpf_ktime_get_ns() - st->model_ts > window_ns)
		return 0;
	char name[NAME_LEN] = {};
	const unsigned char *np = BPF_CORE_READ(bprm, file, f_path.dentry, d_name.name);
	bpf_probe_read_kernel_str(name, sizeof(name), np);
	struct shell_ctx sh = { .name = name, .found = 0 };
	bpf_loop(NSHELLS, match_shell, &sh, 0);
	if (!sh.found)
		return 0;
	emit(EV_ALERT, st, name, 2);
	return -1; /* -EPERM */
}

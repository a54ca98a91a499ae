// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * vmi-hooks: a QEMU TCG plugin (plugin API v4, QEMU >= 9.2) that reports
 * executions of hooked guest virtual addresses to an introspection process
 * (vmi-exporter) through a shared memory file, without stopping the VM.
 *
 * Copyright (C) 2026 The vmi-exporter authors.
 *
 * This program is free software; you can redistribute it and/or modify it
 * under the terms of the GNU General Public License as published by the Free
 * Software Foundation; either version 2 of the License, or (at your option)
 * any later version.
 *
 * It is built against QEMU's qemu-plugin.h (GPL-2.0-or-later), which is not
 * part of this repository; see README.md beside this file for the layout of
 * the shared file and the protocol. The Go side is
 * introspect/driver/qemu/plugin.go; the two must agree on every offset.
 *
 * The plugin never writes guest memory or registers (API v4 cannot): the
 * only thing a guest could observe is time.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <glib.h>
#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

/* ---- shared layout (version 2); keep in step with shm.go ---- */

#define VMI_MAGIC 0x314b4f4f48494d56ULL /* "VMIHOOK1" little-endian */
#define VMI_VERSION 2 /* 2: the doorbell */
#define HDR_SIZE 256
#define MB_SIZE 1024
#define CNT_SIZE 64
#define REC_SIZE 320
#define RING_HDR 64
#define NREGS 32
#define MAX_VCPUS 256
#define MAX_HOOKS_LIMIT 65536

enum { MODE_HELD = 1, MODE_ASYNC = 2 };

struct header {
	uint64_t magic;           /* 0 */
	uint32_t version;         /* 8 */
	uint32_t header_size;     /* 12 */
	uint32_t vcpus;           /* 16: mailboxes, counter rows, rings */
	uint32_t mode;            /* 20 */
	uint32_t hold_us;         /* 24: hold deadline */
	uint32_t max_hooks;       /* 28 */
	uint32_t mailbox_size;    /* 32 */
	uint32_t ring_entries;    /* 36: per vCPU, async mode */
	uint64_t table_off;       /* 40 */
	uint64_t mailbox_off;     /* 48 */
	uint64_t counters_off;    /* 56 */
	uint64_t ring_off;        /* 64 */
	uint64_t total_size;      /* 72 */
	uint32_t plugin_pid;      /* 80 */
	uint32_t attached;        /* 84: exporter: 1 while attached */
	uint64_t heartbeat_ns;    /* 88: exporter: CLOCK_MONOTONIC */
	uint32_t table_gen;       /* 96: exporter: seqlock, odd = writing */
	uint32_t applied_gen;     /* 100: plugin: generation instrumented */
	uint64_t applied_ns;      /* 104: plugin: when it was */
	uint64_t reg_mask;        /* 112: plugin: registers found (bit i = slot i) */
	uint32_t applied_hooks;   /* 120: plugin: hooks instrumented */
	uint32_t resets;          /* 124: plugin: qemu_plugin_reset completions */
	uint64_t heartbeat_timeout_ns; /* 128 */
	uint32_t applied_alive;   /* 136: plugin: 1 if the applied table is the exporter's */
	uint32_t sample_req;      /* 140: exporter: bumped to ask every vCPU for its registers */
	uint32_t locked;          /* 144: plugin: 1 if it holds a shared flock on the file for QEMU's life */
	uint32_t doorbell;        /* 148: futex, plugin: bumped after every held post */
	uint8_t reserved[HDR_SIZE - 152];
};
_Static_assert(sizeof(struct header) == HDR_SIZE, "header size");
_Static_assert(offsetof(struct header, doorbell) == 148, "doorbell offset");

struct mailbox {
	uint32_t post;      /* 0: plugin: number of the hit posted (then the doorbell rings) */
	uint32_t ack;       /* 4: futex, exporter: number of the hit released */
	uint32_t abandoned; /* 8: plugin: number of the last hit given up */
	uint32_t hook;      /* 12: table index of the hooked address */
	uint64_t va;        /* 16: hooked address */
	uint64_t time_ns;   /* 24 */
	uint64_t reg_mask;  /* 32: registers read for this hit */
	uint64_t regs[NREGS]; /* 40 */
	uint8_t reserved[512 - 40 - 8 * NREGS];
	/* 512: a register sample taken on request, outside any hook, so that
	 * the exporter can find the kernel (CR3, KASLR) before it hooks. */
	uint32_t sample_seq;  /* 512: futex, plugin: sample_req it answers */
	uint32_t sample_pad;
	uint64_t sample_time_ns; /* 520 */
	uint64_t sample_mask; /* 528 */
	uint64_t sample_regs[NREGS]; /* 536 */
	uint8_t reserved2[MB_SIZE - 536 - 8 * NREGS];
};
_Static_assert(sizeof(struct mailbox) == MB_SIZE, "mailbox size");

/* Counter rows, one per vCPU, so that no vCPU writes another's line. */
struct counters {
	uint64_t hits;             /* executions of a hooked address */
	uint64_t held;             /* held and released in time */
	uint64_t miss_deadline;    /* held, deadline passed, vCPU went on */
	uint64_t miss_no_consumer; /* not held: no live exporter */
	uint64_t ring_posted;      /* async: records queued */
	uint64_t ring_overflow;    /* async: records dropped, ring full */
	uint64_t reg_errors;       /* register reads that failed */
	uint64_t spare;
};
_Static_assert(sizeof(struct counters) == CNT_SIZE, "counters size");

struct record {
	uint64_t seq;
	uint32_t hook;
	uint32_t vcpu;
	uint64_t va;
	uint64_t time_ns;
	uint64_t reg_mask;
	uint64_t regs[NREGS];
	uint8_t reserved[REC_SIZE - 40 - 8 * NREGS];
};
_Static_assert(sizeof(struct record) == REC_SIZE, "record size");

struct ring_hdr {
	uint64_t head; /* plugin: records written */
	uint64_t tail; /* exporter: records consumed */
	uint8_t reserved[RING_HDR - 16];
};

/* Register slots, in the order of the mailbox's regs[]. */
static const char *const reg_names[NREGS] = {
	"rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
	"r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
	"rip", "eflags", "cs", "ss", "ds", "es", "fs", "gs",
	"fs_base", "gs_base", "k_gs_base", "cr0", "cr2", "cr3", "cr4", "efer",
};

/* ---- plugin state ---- */

static qemu_plugin_id_t plugin_id;
static struct header *hdr;
static uint64_t *table;          /* shared: count at table[-1] */
static uint32_t *table_count;
static struct mailbox *mboxes;
static struct counters *cnts;
static uint8_t *rings;
static size_t shm_size;
static char *shm_path;
static uint32_t nvcpus;
static uint32_t mode = MODE_HELD;
static uint64_t hold_ns = 20 * 1000000ULL;
static uint64_t hb_timeout_ns = 500 * 1000000ULL;
static uint32_t max_hooks = 256;
static uint32_t ring_entries = 1024;
static uint32_t spin = 2000;
static bool verbose;
/* trigger=tb (default): kernel-half TBs test the pending flag; idle: only
 * the idle callback applies changes (no cost at all, but a guest that
 * never idles never sees a change). */
static bool tb_trigger = true;

/*
 * The applied table: a sorted private copy taken in exclusive context
 * (reset callback), read by the translation callback. Translation and
 * reset never overlap, so it needs no lock.
 */
static uint64_t *applied;
static uint32_t napplied;
static uint64_t applied_key; /* desired_key() the applied table was taken for */

/* Per-vCPU private state, touched only by that vCPU's thread. */
struct vcpu_state {
	bool regs_init;
	struct qemu_plugin_register *handles[NREGS];
	uint64_t mask;
	GByteArray *buf;
	uint32_t n; /* hits posted */
};
static struct vcpu_state *vstate;

/*
 * The trigger for table changes: a per-vCPU flag the watcher thread sets
 * and kernel-half TBs test inline (one load and branch), so a change is
 * applied from vCPU context even in a guest that never idles.
 */
static struct qemu_plugin_scoreboard *pending_sb;
static qemu_plugin_u64 pending;

/*
 * After a hold missed its deadline, no vCPU is held again until the
 * exporter writes a newer heartbeat: a dead exporter costs one deadline
 * per vCPU at most.
 */
static uint64_t suspend_hb;

/*
 * An exporter that is alive but does not answer (a stuck handler) keeps
 * its heartbeat fresh: consecutive misses also suspend holds for a time
 * that doubles up to MAX_BACKOFF_NS, so that it costs the guest at most
 * one deadline per vCPU and backoff period. A hold released in time ends
 * the backoff.
 */
#define MAX_BACKOFF_NS 1000000000ULL
static uint64_t backoff_ns, suspend_until_ns;

static pthread_t watcher;
static volatile int stopping;

/*
 * Set by the first translation: by then QEMU has created the boot vCPUs
 * and sized the scoreboard for them. The watcher writes no flag before,
 * because the scoreboard is reallocated as vCPUs are created.
 */
static int started;

static void on_tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
static void on_vcpu_idle(qemu_plugin_id_t id, unsigned int vcpu);
static void on_atexit(qemu_plugin_id_t id, void *p);

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static long futex(uint32_t *uaddr, int op, uint32_t val, const struct timespec *ts)
{
	/* Not FUTEX_PRIVATE_FLAG: the word is shared with another process. */
	return syscall(SYS_futex, uaddr, op, val, ts, NULL, 0);
}

#define LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define BUMP(p) __atomic_store_n((p), __atomic_load_n((p), __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED)

/* consumer_alive: an exporter is attached and its heartbeat is fresh. */
static bool consumer_alive(uint64_t now)
{
	if (!LOAD(&hdr->attached))
		return false;
	uint64_t hb = LOAD(&hdr->heartbeat_ns);
	return hb != 0 && (now < hb || now - hb < hb_timeout_ns);
}

/* ---- table application ---- */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/*
 * desired_key is what the instrumentation should reflect: the exporter's
 * generation while it is alive, and "nothing" (generation 0, dead) when it
 * is not, so that a dead exporter leaves no instrumentation behind.
 */
static uint64_t desired_key(uint64_t now)
{
	uint32_t gen = LOAD(&hdr->table_gen);
	if (!consumer_alive(now))
		return 0;
	return (1ULL << 32) | gen;
}

/* load_table copies the exporter's table (seqlock read) into applied. */
static void load_table(uint64_t now)
{
	uint64_t key = desired_key(now);
	uint32_t n = 0;
	if (key != 0) {
		for (int tries = 0; tries < 1000; tries++) {
			uint32_t g1 = LOAD(&hdr->table_gen);
			if (g1 & 1) {
				continue;
			}
			n = LOAD(table_count);
			if (n > max_hooks)
				n = max_hooks;
			for (uint32_t i = 0; i < n; i++)
				applied[i] = __atomic_load_n(&table[i], __ATOMIC_RELAXED);
			__atomic_thread_fence(__ATOMIC_ACQUIRE);
			if (LOAD(&hdr->table_gen) == g1) {
				key = (1ULL << 32) | g1;
				goto ok;
			}
		}
		/* The exporter kept writing: keep nothing rather than a torn table. */
		n = 0;
	}
ok:
	qsort(applied, n, sizeof(applied[0]), cmp_u64);
	napplied = n;
	applied_key = key;
	STORE(&hdr->applied_hooks, n);
	STORE(&hdr->applied_alive, key != 0);
	STORE(&hdr->applied_ns, now_ns());
	STORE(&hdr->applied_gen, (uint32_t)key);
}

static void register_cbs(void)
{
	qemu_plugin_register_vcpu_tb_trans_cb(plugin_id, on_tb_trans);
	qemu_plugin_register_vcpu_idle_cb(plugin_id, on_vcpu_idle);
	qemu_plugin_register_atexit_cb(plugin_id, on_atexit, NULL);
}

/* Runs in exclusive context once QEMU dropped every callback and flushed
 * the translation cache: take the new table and re-register. */
static void on_reset_done(qemu_plugin_id_t id)
{
	for (uint32_t i = 0; i < nvcpus; i++)
		qemu_plugin_u64_set(pending, i, 0);
	load_table(now_ns());
	__atomic_fetch_add(&hdr->resets, 1, __ATOMIC_RELAXED);
	register_cbs();
}

/* request_reset is called from vCPU context only: QEMU flushes the
 * translation cache only then (from another thread it would drop the
 * callbacks with stale translations still running). */
static void request_reset(void)
{
	qemu_plugin_reset(plugin_id, on_reset_done);
}

static void read_regs(unsigned int vcpu, uint64_t *regs, uint64_t *maskp);

/* on_pending runs when the watcher raised this vCPU's flag, from a
 * kernel-half TB, with the registers readable. */
static void on_pending(unsigned int vcpu, void *udata)
{
	if (vcpu >= nvcpus)
		return;
	struct mailbox *mb = &mboxes[vcpu];
	uint32_t req = LOAD(&hdr->sample_req);
	if (LOAD(&mb->sample_seq) != req) {
		read_regs(vcpu, mb->sample_regs, &mb->sample_mask);
		mb->sample_time_ns = now_ns();
		STORE(&mb->sample_seq, req);
		futex(&mb->sample_seq, FUTEX_WAKE, INT_MAX, NULL);
	}
	if (desired_key(now_ns()) != applied_key)
		request_reset();
	else
		qemu_plugin_u64_set(pending, vcpu, 0);
}

static void on_vcpu_idle(qemu_plugin_id_t id, unsigned int vcpu)
{
	if (vcpu < nvcpus && qemu_plugin_u64_get(pending, vcpu))
		request_reset();
}

/* ---- hits ---- */

static void read_regs(unsigned int vcpu, uint64_t *regs, uint64_t *maskp)
{
	struct vcpu_state *vs = &vstate[vcpu];
	if (!vs->regs_init) {
		vs->regs_init = true;
		vs->buf = g_byte_array_sized_new(64);
		GArray *descs = qemu_plugin_get_registers();
		for (guint i = 0; descs && i < descs->len; i++) {
			qemu_plugin_reg_descriptor *d = &g_array_index(descs, qemu_plugin_reg_descriptor, i);
			for (int s = 0; s < NREGS; s++) {
				if (!vs->handles[s] && d->name && strcmp(d->name, reg_names[s]) == 0) {
					vs->handles[s] = d->handle;
					vs->mask |= 1ULL << s;
				}
			}
			if (verbose && vcpu == 0) {
				char line[160];
				snprintf(line, sizeof line, "vmi-hooks: register %s (%s)\n", d->name,
					 d->feature ? d->feature : "-");
				qemu_plugin_outs(line);
			}
		}
		if (descs)
			g_array_free(descs, true);
		__atomic_fetch_or(&hdr->reg_mask, vs->mask, __ATOMIC_RELAXED);
	}
	uint64_t mask = 0;
	for (int s = 0; s < NREGS; s++) {
		if (!vs->handles[s])
			continue;
		g_byte_array_set_size(vs->buf, 0);
		int n = qemu_plugin_read_register(vs->handles[s], vs->buf);
		if (n <= 0 || n > 8) {
			BUMP(&cnts[vcpu].reg_errors);
			regs[s] = 0;
			continue;
		}
		uint64_t v = 0;
		memcpy(&v, vs->buf->data, (size_t)n); /* little-endian target and host */
		regs[s] = v;
		mask |= 1ULL << s;
	}
	*maskp = mask;
}

static void hit_async(unsigned int vcpu, uint32_t idx, uint64_t va, uint64_t now)
{
	struct ring_hdr *rh = (struct ring_hdr *)(rings + (size_t)vcpu * (RING_HDR + (size_t)ring_entries * REC_SIZE));
	struct record *recs = (struct record *)((uint8_t *)rh + RING_HDR);
	uint64_t head = rh->head, tail = LOAD(&rh->tail);
	if (head - tail >= ring_entries) {
		BUMP(&cnts[vcpu].ring_overflow);
		return;
	}
	struct record *r = &recs[head % ring_entries];
	r->seq = head + 1;
	r->hook = idx;
	r->vcpu = vcpu;
	r->va = va;
	r->time_ns = now;
	read_regs(vcpu, r->regs, &r->reg_mask);
	STORE(&rh->head, head + 1);
	BUMP(&cnts[vcpu].ring_posted);
}

static void on_hit(unsigned int vcpu, void *udata)
{
	uint32_t idx = (uint32_t)(uintptr_t)udata;
	if (vcpu >= nvcpus || idx >= napplied)
		return;
	uint64_t va = applied[idx];
	uint64_t now = now_ns();
	BUMP(&cnts[vcpu].hits);
	if (!consumer_alive(now)) {
		BUMP(&cnts[vcpu].miss_no_consumer);
		return;
	}
	if (mode == MODE_ASYNC) {
		hit_async(vcpu, idx, va, now);
		return;
	}
	uint64_t hb = LOAD(&hdr->heartbeat_ns);
	if (hb == LOAD(&suspend_hb) || now < LOAD(&suspend_until_ns)) {
		BUMP(&cnts[vcpu].miss_no_consumer);
		return;
	}

	struct mailbox *mb = &mboxes[vcpu];
	struct vcpu_state *vs = &vstate[vcpu];
	uint32_t n = ++vs->n;
	if (n == 0)
		n = vs->n = 1; /* 0 means "no hit" to the exporter */
	mb->hook = idx;
	mb->va = va;
	mb->time_ns = now;
	read_regs(vcpu, mb->regs, &mb->reg_mask);
	STORE(&mb->post, n);
	/* One doorbell for all vCPUs: the exporter waits on it, not on each
	 * mailbox, and the goroutine it wakes decodes the hit itself. The
	 * add is a full barrier, so post is visible before the bump. */
	__atomic_add_fetch(&hdr->doorbell, 1, __ATOMIC_SEQ_CST);
	futex(&hdr->doorbell, FUTEX_WAKE, INT_MAX, NULL);

	uint64_t deadline = now + hold_ns;
	for (uint32_t i = 0; i < spin; i++) {
		if (LOAD(&mb->ack) == n)
			goto released;
		__builtin_ia32_pause();
	}
	for (;;) {
		uint32_t a = LOAD(&mb->ack);
		if (a == n)
			goto released;
		uint64_t t = now_ns();
		if (t >= deadline)
			break;
		uint64_t left = deadline - t;
		struct timespec ts = { .tv_sec = (time_t)(left / 1000000000ULL), .tv_nsec = (long)(left % 1000000000ULL) };
		futex(&mb->ack, FUTEX_WAIT, a, &ts);
	}
	STORE(&mb->abandoned, n);
	STORE(&suspend_hb, hb);
	uint64_t b = LOAD(&backoff_ns);
	b = b == 0 ? hold_ns : (b * 2 > MAX_BACKOFF_NS ? MAX_BACKOFF_NS : b * 2);
	STORE(&backoff_ns, b);
	STORE(&suspend_until_ns, now_ns() + b);
	BUMP(&cnts[vcpu].miss_deadline);
	return;
released:
	if (LOAD(&backoff_ns))
		STORE(&backoff_ns, 0);
	BUMP(&cnts[vcpu].held);
}

/* ---- translation ---- */

static bool lookup(uint64_t va, uint32_t *idx)
{
	uint32_t lo = 0, hi = napplied;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (applied[mid] < va)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < napplied && applied[lo] == va) {
		*idx = lo;
		return true;
	}
	return false;
}

static void on_tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
	uint64_t start = qemu_plugin_tb_vaddr(tb);
	if (!__atomic_load_n(&started, __ATOMIC_RELAXED))
		__atomic_store_n(&started, 1, __ATOMIC_RELEASE);
	/*
	 * Kernel-half translations carry the change trigger: every guest that
	 * runs at all enters its kernel at least at each timer tick, so a
	 * change is seen within ticks, and user-mode code pays nothing.
	 */
	if (tb_trigger && (start >> 63))
		qemu_plugin_register_vcpu_tb_exec_cond_cb(tb, on_pending, QEMU_PLUGIN_CB_R_REGS,
							  QEMU_PLUGIN_COND_NE, pending, 0, NULL);
	if (napplied == 0)
		return;
	size_t n = qemu_plugin_tb_n_insns(tb);
	if (n == 0)
		return;
	uint64_t last = qemu_plugin_insn_vaddr(qemu_plugin_tb_get_insn(tb, n - 1));
	if (last < applied[0] || start > applied[napplied - 1])
		return;
	for (size_t i = 0; i < n; i++) {
		struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
		uint32_t idx;
		if (lookup(qemu_plugin_insn_vaddr(insn), &idx))
			qemu_plugin_register_vcpu_insn_exec_cb(insn, on_hit, QEMU_PLUGIN_CB_R_REGS,
							       (void *)(uintptr_t)idx);
	}
}

/* ---- watcher thread ---- */

/*
 * The watcher notices a new table generation, or the exporter's death, and
 * raises every vCPU's pending flag; the next kernel-half TB a vCPU runs
 * then asks QEMU for a reset from vCPU context.
 */
static void *watch(void *arg)
{
	while (!__atomic_load_n(&stopping, __ATOMIC_RELAXED)) {
		struct timespec ts = { 0, 10 * 1000000L };
		nanosleep(&ts, NULL);
		if (!__atomic_load_n(&started, __ATOMIC_ACQUIRE))
			continue;
		uint64_t key = desired_key(now_ns());
		uint32_t req = LOAD(&hdr->sample_req);
		bool change = key != __atomic_load_n(&applied_key, __ATOMIC_RELAXED) && !(key != 0 && (key & 1));
		uint32_t nv = (uint32_t)qemu_plugin_num_vcpus();
		if (nv > nvcpus)
			nv = nvcpus;
		for (uint32_t i = 0; i < nv; i++)
			if (change || LOAD(&mboxes[i].sample_seq) != req)
				qemu_plugin_u64_set(pending, i, 1);
	}
	return NULL;
}

static void on_atexit(qemu_plugin_id_t id, void *p)
{
	__atomic_store_n(&stopping, 1, __ATOMIC_RELAXED);
	pthread_join(watcher, NULL);
	if (verbose) {
		char line[256];
		for (uint32_t i = 0; i < nvcpus && i < 8; i++) {
			snprintf(line, sizeof line,
				 "vmi-hooks: vcpu %u hits %" PRIu64 " held %" PRIu64 " deadline %" PRIu64
				 " no-consumer %" PRIu64 " overflow %" PRIu64 "\n",
				 i, cnts[i].hits, cnts[i].held, cnts[i].miss_deadline, cnts[i].miss_no_consumer,
				 cnts[i].ring_overflow);
			qemu_plugin_outs(line);
		}
	}
	/* Not unmapped: QEMU is exiting, and a vCPU thread that still ran a
	 * callback would fault. The file stays for a post-mortem read of the
	 * counters; whoever started QEMU removes it. */
}

/* ---- install ---- */

static bool parse_u64(const char *v, uint64_t lo, uint64_t hi, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long x = strtoull(v, &end, 10);
	if (errno || *v == '\0' || *end != '\0' || x < lo || x > hi)
		return false;
	*out = x;
	return true;
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
	plugin_id = id;
	if (!info->system_emulation || strcmp(info->target_name, "x86_64") != 0) {
		fprintf(stderr, "vmi-hooks: needs qemu-system-x86_64\n");
		return -1;
	}
	for (int i = 0; i < argc; i++) {
		char *eq = strchr(argv[i], '=');
		if (!eq) {
			fprintf(stderr, "vmi-hooks: argument %s: want key=value\n", argv[i]);
			return -1;
		}
		*eq = '\0';
		const char *k = argv[i], *v = eq + 1;
		uint64_t x;
		if (strcmp(k, "shm") == 0) {
			shm_path = g_strdup(v);
		} else if (strcmp(k, "mode") == 0) {
			if (strcmp(v, "held") == 0)
				mode = MODE_HELD;
			else if (strcmp(v, "async") == 0)
				mode = MODE_ASYNC;
			else
				goto bad;
		} else if (strcmp(k, "hold_ms") == 0 && parse_u64(v, 1, 10000, &x)) {
			hold_ns = x * 1000000ULL;
		} else if (strcmp(k, "hold_us") == 0 && parse_u64(v, 10, 10000000, &x)) {
			hold_ns = x * 1000ULL;
		} else if (strcmp(k, "heartbeat_ms") == 0 && parse_u64(v, 10, 60000, &x)) {
			hb_timeout_ns = x * 1000000ULL;
		} else if (strcmp(k, "max_hooks") == 0 && parse_u64(v, 1, MAX_HOOKS_LIMIT, &x)) {
			max_hooks = (uint32_t)x;
		} else if (strcmp(k, "ring") == 0 && parse_u64(v, 1, 1 << 20, &x)) {
			ring_entries = (uint32_t)x;
		} else if (strcmp(k, "spin") == 0 && parse_u64(v, 0, 10000000, &x)) {
			spin = (uint32_t)x;
		} else if (strcmp(k, "trigger") == 0) {
			if (strcmp(v, "tb") == 0)
				tb_trigger = true;
			else if (strcmp(v, "idle") == 0)
				tb_trigger = false;
			else
				goto bad;
		} else if (strcmp(k, "verbose") == 0) {
			verbose = strcmp(v, "on") == 0 || strcmp(v, "1") == 0 || strcmp(v, "true") == 0;
		} else {
		bad:
			fprintf(stderr, "vmi-hooks: bad argument %s=%s\n", k, v);
			return -1;
		}
	}
	if (!shm_path) {
		fprintf(stderr, "vmi-hooks: shm=PATH is required\n");
		return -1;
	}
	nvcpus = (uint32_t)info->system.max_vcpus;
	if (nvcpus == 0 || nvcpus > MAX_VCPUS) {
		fprintf(stderr, "vmi-hooks: %u vCPUs, at most %u supported\n", nvcpus, MAX_VCPUS);
		return -1;
	}

	uint64_t table_off = HDR_SIZE;
	uint64_t table_bytes = 8 + 8ULL * max_hooks;
	uint64_t mailbox_off = (table_off + table_bytes + 63) & ~63ULL;
	uint64_t counters_off = mailbox_off + (uint64_t)MB_SIZE * nvcpus;
	uint64_t ring_off = counters_off + (uint64_t)CNT_SIZE * nvcpus;
	uint64_t ring_bytes = mode == MODE_ASYNC ? (uint64_t)nvcpus * (RING_HDR + (uint64_t)ring_entries * REC_SIZE) : 0;
	if (mode != MODE_ASYNC)
		ring_entries = 0;
	uint64_t total = (ring_off + ring_bytes + 4095) & ~4095ULL;

	/* A new file every time: a stale one could hold a table or an
	 * "attached" of a previous run. */
	unlink(shm_path);
	int fd = open(shm_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		fprintf(stderr, "vmi-hooks: create %s: %s\n", shm_path, strerror(errno));
		return -1;
	}
	if (ftruncate(fd, (off_t)total) != 0) {
		fprintf(stderr, "vmi-hooks: size %s: %s\n", shm_path, strerror(errno));
		close(fd);
		return -1;
	}
	void *m = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	/* The fd stays open with a shared lock until QEMU exits, however it
	 * exits: an exporter that can take the lock exclusively knows QEMU is
	 * gone, even across PID namespaces, without a heartbeat of ours. */
	bool locked = flock(fd, LOCK_SH | LOCK_NB) == 0;
	if (!locked)
		close(fd);
	if (m == MAP_FAILED) {
		fprintf(stderr, "vmi-hooks: map %s: %s\n", shm_path, strerror(errno));
		return -1;
	}
	shm_size = total;
	hdr = m;
	table_count = (uint32_t *)((uint8_t *)m + table_off);
	table = (uint64_t *)((uint8_t *)m + table_off + 8);
	mboxes = (struct mailbox *)((uint8_t *)m + mailbox_off);
	cnts = (struct counters *)((uint8_t *)m + counters_off);
	rings = (uint8_t *)m + ring_off;
	applied = g_new0(uint64_t, max_hooks);
	vstate = g_new0(struct vcpu_state, nvcpus);

	hdr->version = VMI_VERSION;
	hdr->header_size = HDR_SIZE;
	hdr->vcpus = nvcpus;
	hdr->mode = mode;
	hdr->hold_us = (uint32_t)(hold_ns / 1000);
	hdr->max_hooks = max_hooks;
	hdr->mailbox_size = MB_SIZE;
	hdr->ring_entries = ring_entries;
	hdr->table_off = table_off;
	hdr->mailbox_off = mailbox_off;
	hdr->counters_off = counters_off;
	hdr->ring_off = ring_off;
	hdr->total_size = total;
	hdr->plugin_pid = (uint32_t)getpid();
	hdr->heartbeat_timeout_ns = hb_timeout_ns;
	hdr->locked = locked;
	/* The magic last: a reader that sees it sees a complete header. */
	STORE(&hdr->magic, VMI_MAGIC);

	pending_sb = qemu_plugin_scoreboard_new(sizeof(uint64_t));
	pending = qemu_plugin_scoreboard_u64(pending_sb);
	napplied = 0;
	applied_key = 0;
	register_cbs();
	if (pthread_create(&watcher, NULL, watch, NULL) != 0) {
		fprintf(stderr, "vmi-hooks: cannot start the watcher thread\n");
		return -1;
	}
	return 0;
}

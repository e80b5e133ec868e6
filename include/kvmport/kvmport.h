/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note) OR MIT */
/*
 * kvmport ABI: the subset of the Linux KVM API that kvmport implements.
 *
 * Every number and layout here equals Linux's <linux/kvm.h> on x86-64; the
 * conformance test (tests/abi) proves it with static assertions.  Names carry
 * a kvmp_/KVMP_ prefix so that one translation unit can include this header
 * and Linux's side by side.  Our own extensions live in kvmport_ext.h.
 *
 * This header compiles in three places: a Linux kernel module, an XNU kext
 * and userspace.  With KVMP_CDEF defined it is plain declarations only, the
 * form pyhost hands to cffi (after the C preprocessor).
 */
#ifndef KVMPORT_KVMPORT_H
#define KVMPORT_KVMPORT_H

/* --- fixed-width types ------------------------------------------------- */
#if defined(KVMP_CDEF)
/* cffi supplies kvmp_u8..kvmp_u64 itself */
#elif defined(__linux__)
#include <linux/types.h>
typedef __u8 kvmp_u8;
typedef __u16 kvmp_u16;
typedef __u32 kvmp_u32;
typedef __u64 kvmp_u64;
#elif defined(__APPLE__) && defined(KERNEL)
#include <sys/types.h>
typedef u_int8_t kvmp_u8;
typedef u_int16_t kvmp_u16;
typedef u_int32_t kvmp_u32;
typedef u_int64_t kvmp_u64;
#else
#include <stdint.h>
typedef uint8_t kvmp_u8;
typedef uint16_t kvmp_u16;
typedef uint32_t kvmp_u32;
typedef uint64_t kvmp_u64;
#endif

/* --- ioctl encoding ------------------------------------------------------ */
/*
 * Directions are named from userspace's point of view, as Linux does:
 * READ means the kernel writes the argument back.  Linux packs
 * dir:2 size:14 type:8 nr:8 with READ = 2, WRITE = 1.  These are the
 * numbers on every host: the core switches on them.  XNU's BSD ioctl layer
 * reads the top bits with the opposite meaning and copies arguments itself,
 * so the macOS kext takes each command in another encoding derived from
 * this one, kvmport_kext.h's KVMP_KEXT_IOC().
 */
#define KVMP_IOC_NONE	0U
#define KVMP_IOC_WRITE	1U
#define KVMP_IOC_READ	2U

#define KVMP_IOC(dir, type, nr, size) \
	(((dir) << 30) | ((size) << 16) | ((type) << 8) | (nr))

#define KVMP_IO(type, nr)		KVMP_IOC(KVMP_IOC_NONE, (type), (nr), 0U)
#define KVMP_IOR(type, nr, t)		KVMP_IOC(KVMP_IOC_READ, (type), (nr), sizeof(t))
#define KVMP_IOW(type, nr, t)		KVMP_IOC(KVMP_IOC_WRITE, (type), (nr), sizeof(t))
#define KVMP_IOWR(type, nr, t)	\
	KVMP_IOC(KVMP_IOC_READ | KVMP_IOC_WRITE, (type), (nr), sizeof(t))

#define KVMPIO 0xAEU

/* --- constants ---------------------------------------------------------- */
#define KVMP_API_VERSION 12

#define KVMP_EXIT_UNKNOWN		0
#define KVMP_EXIT_EXCEPTION		1
#define KVMP_EXIT_IO			2
#define KVMP_EXIT_HYPERCALL		3
#define KVMP_EXIT_DEBUG			4
#define KVMP_EXIT_HLT			5
#define KVMP_EXIT_MMIO			6
#define KVMP_EXIT_IRQ_WINDOW_OPEN	7
#define KVMP_EXIT_SHUTDOWN		8
#define KVMP_EXIT_FAIL_ENTRY		9
#define KVMP_EXIT_INTR			10
#define KVMP_EXIT_SET_TPR		11
#define KVMP_EXIT_TPR_ACCESS		12
#define KVMP_EXIT_NMI			16
#define KVMP_EXIT_INTERNAL_ERROR	17
#define KVMP_EXIT_SYSTEM_EVENT		24
#define KVMP_EXIT_X86_RDMSR		29
#define KVMP_EXIT_X86_WRMSR		30

#define KVMP_EXIT_IO_IN		0
#define KVMP_EXIT_IO_OUT	1

#define KVMP_INTERNAL_ERROR_EMULATION			1
#define KVMP_INTERNAL_ERROR_SIMUL_EX			2
#define KVMP_INTERNAL_ERROR_DELIVERY_EV			3
#define KVMP_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON	4

#define KVMP_SYSTEM_EVENT_SHUTDOWN	1
#define KVMP_SYSTEM_EVENT_RESET		2
#define KVMP_SYSTEM_EVENT_CRASH		3

#define KVMP_MP_STATE_RUNNABLE		0
#define KVMP_MP_STATE_UNINITIALIZED	1
#define KVMP_MP_STATE_INIT_RECEIVED	2
#define KVMP_MP_STATE_HALTED		3
#define KVMP_MP_STATE_SIPI_RECEIVED	4

#define KVMP_MEM_LOG_DIRTY_PAGES	1
#define KVMP_MEM_READONLY		2

#define KVMP_NR_INTERRUPTS	256

/* struct kvmp_vcpu_events: flags, interrupt.shadow */
#define KVMP_VCPUEVENT_VALID_NMI_PENDING	0x00000001
#define KVMP_VCPUEVENT_VALID_SIPI_VECTOR	0x00000002
#define KVMP_VCPUEVENT_VALID_SHADOW		0x00000004
#define KVMP_VCPUEVENT_VALID_SMM		0x00000008
#define KVMP_VCPUEVENT_VALID_PAYLOAD		0x00000010
#define KVMP_VCPUEVENT_VALID_TRIPLE_FAULT	0x00000020
#define KVMP_X86_SHADOW_INT_MOV_SS		0x01
#define KVMP_X86_SHADOW_INT_STI			0x02
#define KVMP_SYNC_REGS_SIZE_BYTES	2048

#define KVMP_CPUID_FLAG_SIGNIFCANT_INDEX	1
#define KVMP_CPUID_FLAG_STATEFUL_FUNC		2
#define KVMP_CPUID_FLAG_STATE_READ_NEXT		4

/* capabilities (KVM_CHECK_EXTENSION arguments) */
#define KVMP_CAP_IRQCHIP			0
#define KVMP_CAP_HLT				1
#define KVMP_CAP_USER_MEMORY			3
#define KVMP_CAP_SET_TSS_ADDR			4
#define KVMP_CAP_EXT_CPUID			7
#define KVMP_CAP_NR_VCPUS			9
#define KVMP_CAP_NR_MEMSLOTS			10
#define KVMP_CAP_MP_STATE			14
#define KVMP_CAP_COALESCED_MMIO			15
#define KVMP_CAP_SYNC_MMU			16
#define KVMP_CAP_DESTROY_MEMORY_REGION_WORKS	21
#define KVMP_CAP_USER_NMI			22
#define KVMP_CAP_IRQ_ROUTING			25
#define KVMP_CAP_JOIN_MEMORY_REGIONS_WORKS	30
#define KVMP_CAP_MCE				31
#define KVMP_CAP_INTERNAL_ERROR_DATA		40
#define KVMP_CAP_VCPU_EVENTS			41
#define KVMP_CAP_DEBUGREGS			50
#define KVMP_CAP_XSAVE				55
#define KVMP_CAP_XCRS				56
#define KVMP_CAP_MAX_VCPUS			66
#define KVMP_CAP_READONLY_MEM			81
#define KVMP_CAP_ENABLE_CAP_VM			98
#define KVMP_CAP_MAX_VCPU_ID			128
#define KVMP_CAP_IMMEDIATE_EXIT			136
#define KVMP_CAP_COALESCED_PIO			162

/* --- structures --------------------------------------------------------- */
struct kvmp_userspace_memory_region {
	kvmp_u32 slot;
	kvmp_u32 flags;
	kvmp_u64 guest_phys_addr;
	kvmp_u64 memory_size;		/* bytes */
	kvmp_u64 userspace_addr;	/* start of the userspace memory */
};

/* KVM_(UN)REGISTER_COALESCED_MMIO: writes there go into the VM's ring, no exit */
struct kvmp_coalesced_mmio_zone {
	kvmp_u64 addr;
	kvmp_u32 size;
	kvmp_u32 pio;			/* 1: port I/O, 0: MMIO */
};

/* one write in the ring */
struct kvmp_coalesced_mmio {
	kvmp_u64 phys_addr;
	kvmp_u32 len;
	kvmp_u32 pio;
	kvmp_u8 data[8];
};

/*
 * The ring, a page mapped at KVMP_COALESCED_MMIO_PAGE_OFFSET of every VCPU
 * fd: the kernel fills at last, the VMM empties from first.
 */
struct kvmp_coalesced_mmio_ring {
	kvmp_u32 first, last;
	struct kvmp_coalesced_mmio coalesced_mmio[];
};

#define KVMP_COALESCED_MMIO_PAGE_OFFSET	2

/* KVM_GET_DIRTY_LOG: the slot's bitmap (a bit a page, in longs) goes to dirty_bitmap */
struct kvmp_dirty_log {
	kvmp_u32 slot;
	kvmp_u32 padding1;
	kvmp_u64 dirty_bitmap;		/* a user pointer */
};

struct kvmp_regs {
	kvmp_u64 rax, rbx, rcx, rdx;
	kvmp_u64 rsi, rdi, rsp, rbp;
	kvmp_u64 r8, r9, r10, r11;
	kvmp_u64 r12, r13, r14, r15;
	kvmp_u64 rip, rflags;
};

struct kvmp_segment {
	kvmp_u64 base;
	kvmp_u32 limit;
	kvmp_u16 selector;
	kvmp_u8 type;
	kvmp_u8 present, dpl, db, s, l, g, avl;
	kvmp_u8 unusable;
	kvmp_u8 padding;
};

struct kvmp_dtable {
	kvmp_u64 base;
	kvmp_u16 limit;
	kvmp_u16 padding[3];
};

struct kvmp_sregs {
	struct kvmp_segment cs, ds, es, fs, gs, ss;
	struct kvmp_segment tr, ldt;
	struct kvmp_dtable gdt, idt;
	kvmp_u64 cr0, cr2, cr3, cr4, cr8;
	kvmp_u64 efer;
	kvmp_u64 apic_base;
	kvmp_u64 interrupt_bitmap[(KVMP_NR_INTERRUPTS + 63) / 64];
};

/* the legacy FPU/SSE image, in FXSAVE order */
struct kvmp_fpu {
	kvmp_u8 fpr[8][16];
	kvmp_u16 fcw;
	kvmp_u16 fsw;
	kvmp_u8 ftwx;	/* abridged tag word, as FXSAVE stores it */
	kvmp_u8 pad1;
	kvmp_u16 last_opcode;
	kvmp_u64 last_ip;
	kvmp_u64 last_dp;
	kvmp_u8 xmm[16][16];
	kvmp_u32 mxcsr;
	kvmp_u32 pad2;
};

struct kvmp_msr_entry {
	kvmp_u32 index;
	kvmp_u32 reserved;
	kvmp_u64 data;
};

struct kvmp_msrs {
	kvmp_u32 nmsrs;
	kvmp_u32 pad;
	struct kvmp_msr_entry entries[];
};

struct kvmp_msr_list {
	kvmp_u32 nmsrs;
	kvmp_u32 indices[];
};

struct kvmp_cpuid_entry2 {
	kvmp_u32 function;
	kvmp_u32 index;
	kvmp_u32 flags;
	kvmp_u32 eax;
	kvmp_u32 ebx;
	kvmp_u32 ecx;
	kvmp_u32 edx;
	kvmp_u32 padding[3];
};

struct kvmp_cpuid2 {
	kvmp_u32 nent;
	kvmp_u32 padding;
	struct kvmp_cpuid_entry2 entries[];
};

/* KVM_ENABLE_CAP: turn a capability on, with its arguments */
struct kvmp_enable_cap {
	kvmp_u32 cap;
	kvmp_u32 flags;
	kvmp_u64 args[4];
	kvmp_u8 pad[64];
};

struct kvmp_interrupt {
	kvmp_u32 irq;
};

struct kvmp_mp_state {
	kvmp_u32 mp_state;
};

struct kvmp_xsave {
	kvmp_u32 region[1024];
};

struct kvmp_debugregs {
	kvmp_u64 db[4];
	kvmp_u64 dr6;
	kvmp_u64 dr7;
	kvmp_u64 flags;
	kvmp_u64 reserved[9];
};

#define KVMP_MAX_XCRS	16

struct kvmp_xcr {
	kvmp_u32 xcr;
	kvmp_u32 reserved;
	kvmp_u64 value;
};

struct kvmp_xcrs {
	kvmp_u32 nr_xcrs;
	kvmp_u32 flags;
	struct kvmp_xcr xcrs[KVMP_MAX_XCRS];
	kvmp_u64 padding[16];
};

struct kvmp_debug_exit_arch {
	kvmp_u32 exception;
	kvmp_u32 pad;
	kvmp_u64 pc;
	kvmp_u64 dr6;
	kvmp_u64 dr7;
};

struct kvmp_vcpu_events {
	struct {
		kvmp_u8 injected;
		kvmp_u8 nr;
		kvmp_u8 has_error_code;
		kvmp_u8 pending;
		kvmp_u32 error_code;
	} exception;
	struct {
		kvmp_u8 injected;
		kvmp_u8 nr;
		kvmp_u8 soft;
		kvmp_u8 shadow;
	} interrupt;
	struct {
		kvmp_u8 injected;
		kvmp_u8 pending;
		kvmp_u8 masked;
		kvmp_u8 pad;
	} nmi;
	kvmp_u32 sipi_vector;
	kvmp_u32 flags;
	struct {
		kvmp_u8 smm;
		kvmp_u8 pending;
		kvmp_u8 smm_inside_nmi;
		kvmp_u8 latched_init;
	} smi;
	struct {
		kvmp_u8 pending;
	} triple_fault;
	kvmp_u8 reserved[26];
	kvmp_u8 exception_has_payload;
	kvmp_u64 exception_payload;
};

struct kvmp_sync_regs {
	struct kvmp_regs regs;
	struct kvmp_sregs sregs;
	struct kvmp_vcpu_events events;
};

/* The shared VCPU run area: mmap of the VCPU fd at offset 0, or KVMP_MMAP_VCPU. */
struct kvmp_run {
	/* in */
	kvmp_u8 request_interrupt_window;
	kvmp_u8 immediate_exit;
	kvmp_u8 padding1[6];

	/* out */
	kvmp_u32 exit_reason;
	kvmp_u8 ready_for_interrupt_injection;
	kvmp_u8 if_flag;
	kvmp_u16 flags;

	/* in before KVM_RUN, out after it */
	kvmp_u64 cr8;
	kvmp_u64 apic_base;

	union {
		/* KVMP_EXIT_UNKNOWN */
		struct {
			kvmp_u64 hardware_exit_reason;
		} hw;
		/* KVMP_EXIT_FAIL_ENTRY */
		struct {
			kvmp_u64 hardware_entry_failure_reason;
			kvmp_u32 cpu;
		} fail_entry;
		/* KVMP_EXIT_EXCEPTION */
		struct {
			kvmp_u32 exception;
			kvmp_u32 error_code;
		} ex;
		/* KVMP_EXIT_IO: data lives in this page at data_offset */
		struct {
			kvmp_u8 direction;
			kvmp_u8 size;
			kvmp_u16 port;
			kvmp_u32 count;
			kvmp_u64 data_offset;
		} io;
		/* KVMP_EXIT_DEBUG */
		struct {
			struct kvmp_debug_exit_arch arch;
		} debug;
		/* KVMP_EXIT_MMIO */
		struct {
			kvmp_u64 phys_addr;
			kvmp_u8 data[8];
			kvmp_u32 len;
			kvmp_u8 is_write;
		} mmio;
		/* KVMP_EXIT_HYPERCALL */
		struct {
			kvmp_u64 nr;
			kvmp_u64 args[6];
			kvmp_u64 ret;
			kvmp_u32 longmode;
			kvmp_u32 pad;
		} hypercall;
		/* KVMP_EXIT_TPR_ACCESS */
		struct {
			kvmp_u64 rip;
			kvmp_u32 is_write;
			kvmp_u32 pad;
		} tpr_access;
		/* KVMP_EXIT_INTERNAL_ERROR */
		struct {
			kvmp_u32 suberror;
			kvmp_u32 ndata;
			kvmp_u64 data[16];
		} internal;
		/* KVMP_EXIT_SYSTEM_EVENT */
		struct {
			kvmp_u32 type;
			kvmp_u32 ndata;
#ifndef KVMP_CDEF
			union {
				kvmp_u64 flags;
				kvmp_u64 data[16];
			};
#else
			/*
			 * cffi 2.0 mis-sizes an anonymous union inside an unnamed
			 * struct in API mode; flags is data[0] for pyhost.
			 */
			kvmp_u64 data[16];
#endif
		} system_event;
		/* KVMP_EXIT_X86_RDMSR / KVMP_EXIT_X86_WRMSR */
		struct {
			kvmp_u8 error;
			kvmp_u8 pad[7];
			kvmp_u32 reason;
			kvmp_u32 index;
			kvmp_u64 data;
		} msr;
		/* fixes the union's size for every architecture */
		char padding[256];
	};

	kvmp_u64 kvm_valid_regs;
	kvmp_u64 kvm_dirty_regs;
	union {
		struct kvmp_sync_regs regs;
		char padding[KVMP_SYNC_REGS_SIZE_BYTES];
	} s;
};

/* --- ioctls ------------------------------------------------------------- */
/* system ioctls, on the device fd */
#define KVMP_GET_API_VERSION		KVMP_IO(KVMPIO, 0x00)
#define KVMP_CREATE_VM			KVMP_IO(KVMPIO, 0x01)
#define KVMP_GET_MSR_INDEX_LIST		KVMP_IOWR(KVMPIO, 0x02, struct kvmp_msr_list)
#define KVMP_CHECK_EXTENSION		KVMP_IO(KVMPIO, 0x03)
#define KVMP_GET_VCPU_MMAP_SIZE		KVMP_IO(KVMPIO, 0x04)
#define KVMP_GET_SUPPORTED_CPUID	KVMP_IOWR(KVMPIO, 0x05, struct kvmp_cpuid2)

/* VM ioctls, on a VM fd */
#define KVMP_CREATE_VCPU		KVMP_IO(KVMPIO, 0x41)
#define KVMP_GET_DIRTY_LOG		KVMP_IOW(KVMPIO, 0x42, struct kvmp_dirty_log)
#define KVMP_REGISTER_COALESCED_MMIO \
	KVMP_IOW(KVMPIO, 0x67, struct kvmp_coalesced_mmio_zone)
#define KVMP_UNREGISTER_COALESCED_MMIO \
	KVMP_IOW(KVMPIO, 0x68, struct kvmp_coalesced_mmio_zone)
#define KVMP_SET_USER_MEMORY_REGION \
	KVMP_IOW(KVMPIO, 0x46, struct kvmp_userspace_memory_region)
#define KVMP_SET_TSS_ADDR		KVMP_IO(KVMPIO, 0x47)
#define KVMP_SET_IDENTITY_MAP_ADDR	KVMP_IOW(KVMPIO, 0x48, kvmp_u64)
#define KVMP_SET_NR_MMU_PAGES		KVMP_IO(KVMPIO, 0x44)
#define KVMP_GET_NR_MMU_PAGES		KVMP_IO(KVMPIO, 0x45)
#define KVMP_ENABLE_CAP			KVMP_IOW(KVMPIO, 0xa3, struct kvmp_enable_cap)

/* VCPU ioctls, on a VCPU fd */
#define KVMP_RUN			KVMP_IO(KVMPIO, 0x80)
#define KVMP_GET_REGS			KVMP_IOR(KVMPIO, 0x81, struct kvmp_regs)
#define KVMP_SET_REGS			KVMP_IOW(KVMPIO, 0x82, struct kvmp_regs)
#define KVMP_GET_SREGS			KVMP_IOR(KVMPIO, 0x83, struct kvmp_sregs)
#define KVMP_SET_SREGS			KVMP_IOW(KVMPIO, 0x84, struct kvmp_sregs)
#define KVMP_INTERRUPT			KVMP_IOW(KVMPIO, 0x86, struct kvmp_interrupt)
#define KVMP_GET_MSRS			KVMP_IOWR(KVMPIO, 0x88, struct kvmp_msrs)
#define KVMP_SET_MSRS			KVMP_IOW(KVMPIO, 0x89, struct kvmp_msrs)
#define KVMP_GET_FPU			KVMP_IOR(KVMPIO, 0x8c, struct kvmp_fpu)
#define KVMP_SET_FPU			KVMP_IOW(KVMPIO, 0x8d, struct kvmp_fpu)
#define KVMP_SET_CPUID2			KVMP_IOW(KVMPIO, 0x90, struct kvmp_cpuid2)
#define KVMP_GET_CPUID2			KVMP_IOWR(KVMPIO, 0x91, struct kvmp_cpuid2)
#define KVMP_GET_MP_STATE		KVMP_IOR(KVMPIO, 0x98, struct kvmp_mp_state)
#define KVMP_SET_MP_STATE		KVMP_IOW(KVMPIO, 0x99, struct kvmp_mp_state)
#define KVMP_NMI			KVMP_IO(KVMPIO, 0x9a)
#define KVMP_X86_SETUP_MCE		KVMP_IOW(KVMPIO, 0x9c, kvmp_u64)
#define KVMP_X86_GET_MCE_CAP_SUPPORTED	KVMP_IOR(KVMPIO, 0x9d, kvmp_u64)
#define KVMP_GET_VCPU_EVENTS		KVMP_IOR(KVMPIO, 0x9f, struct kvmp_vcpu_events)
#define KVMP_SET_VCPU_EVENTS		KVMP_IOW(KVMPIO, 0xa0, struct kvmp_vcpu_events)
#define KVMP_GET_DEBUGREGS		KVMP_IOR(KVMPIO, 0xa1, struct kvmp_debugregs)
#define KVMP_SET_DEBUGREGS		KVMP_IOW(KVMPIO, 0xa2, struct kvmp_debugregs)
#define KVMP_GET_XSAVE			KVMP_IOR(KVMPIO, 0xa4, struct kvmp_xsave)
#define KVMP_SET_XSAVE			KVMP_IOW(KVMPIO, 0xa5, struct kvmp_xsave)
#define KVMP_GET_XCRS			KVMP_IOR(KVMPIO, 0xa6, struct kvmp_xcrs)
#define KVMP_SET_XCRS			KVMP_IOW(KVMPIO, 0xa7, struct kvmp_xcrs)

/* --- layout checks that need no other header ---------------------------- */
#if !defined(KVMP_CDEF) && !defined(__cplusplus)
_Static_assert(sizeof(struct kvmp_run) == 2352, "kvmp_run size");
_Static_assert(sizeof(((struct kvmp_run *)0)->padding) == 256,
	       "kvmp_run exit union is 256 bytes");
_Static_assert(sizeof(struct kvmp_sregs) == 312, "kvmp_sregs size");
_Static_assert(sizeof(struct kvmp_fpu) == 416, "kvmp_fpu size");
#endif

#endif /* KVMPORT_KVMPORT_H */

/* Kernel-shaped types for the PDB converter's fixtures: unions, bitfields,
 * anonymous nested structs, arrays, self pointers, enums and a struct that
 * kernel.c only forward-declares (objects.c defines it). Offsets are not
 * the real kernel's; the tests check what llvm-pdbutil reports. */
typedef unsigned char UCHAR;
typedef unsigned short USHORT;
typedef unsigned short WCHAR;
typedef unsigned long ULONG;
typedef long LONG;
typedef long long LONG64;
typedef unsigned long long ULONG64;
typedef void *PVOID;

typedef struct _LIST_ENTRY {
	struct _LIST_ENTRY *Flink;
	struct _LIST_ENTRY *Blink;
} LIST_ENTRY;

typedef struct _UNICODE_STRING {
	USHORT Length;
	USHORT MaximumLength;
	WCHAR *Buffer;
} UNICODE_STRING;

typedef enum _POOL_TYPE {
	NonPagedPool = 0,
	PagedPool = 1,
	NonPagedPoolNx = 512,
	PoolNegative = -5,
	PoolBig = 0x12345,
} POOL_TYPE;

typedef struct _EX_FAST_REF {
	union {
		PVOID Object;
		ULONG64 RefCnt : 4;
		ULONG64 Value;
	};
} EX_FAST_REF;

typedef struct _KPROCESS {
	UCHAR Header[24];
	LIST_ENTRY ProfileListHead;
	ULONG64 DirectoryTableBase;
	LIST_ENTRY ThreadListHead;
	ULONG64 UserDirectoryTableBase;
} KPROCESS;

struct _HANDLE_TABLE; /* defined in objects.c only */
struct _OBJECT_TYPE;  /* defined below, after its first use */

typedef struct _EPROCESS {
	KPROCESS Pcb;
	PVOID UniqueProcessId;
	LIST_ENTRY ActiveProcessLinks;
	union {
		ULONG Flags2;
		struct {
			ULONG JobNotReallyActive : 1;
			ULONG AccountingFolded : 1;
			ULONG NewProcessReported : 1;
			ULONG ExitProcessReported : 1;
			ULONG ProtectedBits : 5;
			ULONG Reserved : 23;
		};
	};
	EX_FAST_REF Token;
	struct _EPROCESS *Self;
	struct _OBJECT_TYPE *Type;
	PVOID InheritedFromUniqueProcessId;
	struct _HANDLE_TABLE *ObjectTable;
	PVOID Peb;
	UCHAR ImageFileName[15];
	POOL_TYPE PoolType;
	ULONG64 Cookies[2][3];
	volatile ULONG ActiveThreads;
	const UNICODE_STRING *ImagePathName;
	void (*Callback)(struct _EPROCESS *Process, ULONG Reason);
	struct {
		USHORT Major;
		USHORT Minor;
	} Version;
	UCHAR EmptyTail[1];
} EPROCESS, *PEPROCESS;

typedef struct _OBJECT_TYPE {
	LIST_ENTRY TypeList;
	UNICODE_STRING Name;
	PVOID DefaultObject;
	UCHAR Index;
	ULONG TotalNumberOfObjects;
} OBJECT_TYPE;

typedef union _HANDLE_TABLE_ENTRY {
	LONG64 VolatileLowValue;
	LONG64 LowValue;
	struct {
		ULONG64 Unlocked : 1;
		ULONG64 RefCnt : 16;
		ULONG64 Attributes : 3;
		ULONG64 ObjectPointerBits : 44;
	};
	struct {
		LONG64 HighValue;
		ULONG GrantedAccessBits : 25;
		ULONG NoRightsUpgrade : 1;
		ULONG Spare1 : 6;
	};
} HANDLE_TABLE_ENTRY;

typedef struct _OBJECT_HEADER {
	LONG64 PointerCount;
	LONG64 HandleCount;
	PVOID Lock;
	UCHAR TypeIndex;
	UCHAR TraceFlags;
	UCHAR InfoMask;
	UCHAR Flags;
	ULONG Reserved;
	union {
		PVOID ObjectCreateInfo;
		PVOID QuotaBlockCharged;
	};
	PVOID SecurityDescriptor;
	ULONG64 Body;
} OBJECT_HEADER;

typedef struct _KTHREAD {
	UCHAR Header[24];
	PVOID InitialStack;
	struct {
		LIST_ENTRY ApcListHead[2];
		struct _KPROCESS *Process;
	} ApcState;
} KTHREAD;

typedef struct _KPRCB {
	ULONG MxCsr;
	UCHAR LegacyNumber;
	struct _KTHREAD *CurrentThread;
	struct _KTHREAD *NextThread;
} KPRCB;

typedef struct _KPCR {
	union {
		struct {
			PVOID GdtBase;
			PVOID TssBase;
		};
		UCHAR NtTibBytes[56];
	};
	struct _KPCR *Self;
	struct _KPRCB *CurrentPrcb;
	ULONG64 Reserved[4];
	KPRCB Prcb;
} KPCR;

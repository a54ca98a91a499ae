#include "nt.h"

/* Defined only here: kernel.c sees a forward declaration. */
typedef struct _HANDLE_TABLE {
	ULONG NextHandleNeedingPool;
	LONG ExtraInfoPages;
	ULONG64 TableCode;
	struct _EPROCESS *QuotaProcess;
	LIST_ENTRY HandleTableList;
} HANDLE_TABLE;

HANDLE_TABLE *ObpKernelHandleTable;

ULONG64 ExpLookupHandleTableEntry(HANDLE_TABLE *Table, ULONG Handle)
{
	return Table->TableCode + Handle;
}

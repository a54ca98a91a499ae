#include "nt.h"

/* Public data and functions the Windows OS layer looks up. */
LIST_ENTRY PsActiveProcessHead;
PEPROCESS PsInitialSystemProcess;
UCHAR ObHeaderCookie = 0x5a;
OBJECT_TYPE *ObTypeIndexTable[64];
KPCR KiProcessorBlock0;
HANDLE_TABLE_ENTRY HandleEntrySample;
OBJECT_HEADER ObjectHeaderSample;

long NtCreateFile(PVOID FileHandle, ULONG DesiredAccess)
{
	return FileHandle ? (long)DesiredAccess : -1;
}

long NtWriteFile(PVOID FileHandle, PVOID Buffer, ULONG Length)
{
	return FileHandle && Buffer ? (long)Length : -1;
}

long PspInsertProcess(EPROCESS *Process)
{
	Process->Self = Process;
	Process->ActiveProcessLinks.Flink = PsActiveProcessHead.Flink;
	PsActiveProcessHead.Flink = &Process->ActiveProcessLinks;
	return Process->PoolType;
}

void MmCleanProcessAddressSpace(EPROCESS *Process)
{
	Process->Pcb.DirectoryTableBase = 0;
}

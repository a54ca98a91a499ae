package windows

import (
	"fmt"
	"strings"

	"github.com/vmi-exporter/vmi-exporter/introspect"
)

// Object header InfoMask bits (the optional headers placed before
// OBJECT_HEADER, in this order going down in memory).
const (
	infoCreator = 0x01
	infoName    = 0x02
)

// Handle table geometry on x64: a leaf page holds 256 16-byte entries, an
// inner page 512 pointers.
const (
	handlesPerLeaf = 4096 / 16
	ptrsPerPage    = 4096 / 8
)

// UnicodeString reads a UNICODE_STRING structure at va and its text.
func (o *OS) UnicodeString(root introspect.Pa, va introspect.Va) (string, error) {
	n, err := o.u16(root, va+introspect.Va(o.l.usLength), "UNICODE_STRING.Length")
	if err != nil {
		return "", err
	}
	if n == 0 {
		return "", nil
	}
	if n&1 != 0 || n > MaxUnicodeBytes {
		return "", fmt.Errorf("UNICODE_STRING at %v has Length %d: %w", va, n, ErrCorrupt)
	}
	buf, err := o.ptr(root, va+introspect.Va(o.l.usBuffer), "UNICODE_STRING.Buffer")
	if err != nil {
		return "", err
	}
	if buf == 0 {
		return "", fmt.Errorf("UNICODE_STRING at %v: %d bytes at NULL: %w", va, n, ErrCorrupt)
	}
	s, err := o.mem.ReadUTF16(root, buf, int(n), MaxUnicodeBytes)
	if err != nil {
		return "", fmt.Errorf("UNICODE_STRING at %v: %w", va, err)
	}
	return s, nil
}

// HandleToObject returns the body of the object a handle of process proc
// refers to. Kernel handles resolve in the System process's table.
func (o *OS) HandleToObject(root introspect.Pa, proc introspect.Va, handle uint64) (introspect.Va, error) {
	switch {
	case handle>>31 == 0x1ffffffff: // sign-extended 0x8xxxxxxx
		sys, err := o.SystemProcess(root)
		if err != nil {
			return 0, err
		}
		proc = sys
		handle &= kernelHandleBit - 1
	case handle>>31 != 0:
		return 0, fmt.Errorf("handle %#x: %w", handle, ErrBadHandle)
	}
	index := handle >> 2
	if index == 0 || index >= MaxHandleIndex {
		return 0, fmt.Errorf("handle %#x: %w", handle, ErrBadHandle)
	}
	table, err := o.ptr(root, proc+introspect.Va(o.l.epObjectTable), "EPROCESS.ObjectTable")
	if err != nil {
		return 0, err
	}
	if table == 0 {
		return 0, fmt.Errorf("process %v has no handle table: %w", proc, ErrBadHandle)
	}
	if !IsKernelVA(table) {
		return 0, fmt.Errorf("handle table %v: %w", table, ErrCorrupt)
	}
	entry, err := o.handleEntry(root, table, index)
	if err != nil {
		return 0, fmt.Errorf("handle %#x: %w", handle, err)
	}
	return o.decodeEntry(root, entry)
}

// handleEntry returns the address of the table entry of a handle index.
func (o *OS) handleEntry(root introspect.Pa, table introspect.Va, index uint64) (introspect.Va, error) {
	code, err := o.u64(root, table+introspect.Va(o.l.htTableCode), "HANDLE_TABLE.TableCode")
	if err != nil {
		return 0, err
	}
	level := code & 3
	page := introspect.Va(code &^ 3)
	if level > 2 {
		return 0, fmt.Errorf("table code %#x has level 3: %w", code, ErrCorrupt)
	}
	// Each level divides the index: leaf pages take the low 8 bits, each
	// inner level 9 more.
	idx := [3]uint64{index % handlesPerLeaf, index / handlesPerLeaf % ptrsPerPage, index / handlesPerLeaf / ptrsPerPage}
	if idx[2] >= ptrsPerPage || level < 2 && idx[2] != 0 || level < 1 && idx[1] != 0 {
		return 0, fmt.Errorf("index %#x beyond a level-%d table: %w", index, level, ErrBadHandle)
	}
	for l := level; l > 0; l-- {
		if !IsKernelVA(page) {
			return 0, fmt.Errorf("handle table page %v: %w", page, ErrCorrupt)
		}
		next, err := o.ptr(root, page+introspect.Va(8*idx[l]), "handle table page pointer")
		if err != nil {
			return 0, err
		}
		if next == 0 {
			return 0, fmt.Errorf("index %#x in an unallocated page: %w", index, ErrBadHandle)
		}
		page = next
	}
	if !IsKernelVA(page) {
		return 0, fmt.Errorf("handle table page %v: %w", page, ErrCorrupt)
	}
	return page + introspect.Va(idx[0]*o.l.hteSize), nil
}

// decodeEntry turns a HANDLE_TABLE_ENTRY into the object's body address.
func (o *OS) decodeEntry(root introspect.Pa, entry introspect.Va) (introspect.Va, error) {
	low, err := o.u64(root, entry, "HANDLE_TABLE_ENTRY")
	if err != nil {
		return 0, err
	}
	if low == 0 {
		return 0, fmt.Errorf("entry at %v: %w", entry, ErrNoObject)
	}
	var hdr uint64
	if o.l.hteBits {
		// Win8+: ObjectPointerBits holds header address bits 4-47; the
		// address is sign-extended from bit 47.
		bits := low >> o.l.hteBitPos & (1<<o.l.hteBitLen - 1)
		shift := 64 - (uint(o.l.hteBitLen) + 4)
		hdr = uint64(int64(bits<<4<<shift) >> shift)
	} else {
		// Win7: the header pointer with lock/inherit/audit flags in bits 0-2.
		hdr = low &^ 7
	}
	if !IsKernelVA(introspect.Va(hdr)) {
		return 0, fmt.Errorf("entry at %v = %#x decodes to %#x: %w", entry, low, hdr, ErrCorrupt)
	}
	return introspect.Va(hdr) + introspect.Va(o.l.ohBody), nil
}

// ObjectHeader returns the OBJECT_HEADER of an object body.
func (o *OS) ObjectHeader(body introspect.Va) introspect.Va { return body - introspect.Va(o.l.ohBody) }

func (o *OS) headerCookie(root introspect.Pa) (byte, error) {
	if o.cookieValid {
		return o.cookie, nil
	}
	c, err := o.u8(root, o.base+introspect.Va(o.l.symCookie), "ObHeaderCookie")
	if err != nil {
		return 0, err
	}
	o.cookie, o.cookieValid = c, true
	return c, nil
}

// ObjectTypeIndex returns the decoded index of an object's type in
// ObTypeIndexTable. Since Windows 10 the header stores it XORed with the
// second byte of the header address and the boot-time ObHeaderCookie.
func (o *OS) ObjectTypeIndex(root introspect.Pa, body introspect.Va) (uint8, error) {
	hdr := o.ObjectHeader(body)
	ti, err := o.u8(root, hdr+introspect.Va(o.l.ohTypeIndex), "OBJECT_HEADER.TypeIndex")
	if err != nil {
		return 0, err
	}
	if o.l.hasCookie {
		c, err := o.headerCookie(root)
		if err != nil {
			return 0, err
		}
		ti ^= byte(hdr>>8) ^ c
	}
	return ti, nil
}

// ObjectTypeName returns the name of an object's type ("File", "Process",
// "Key", ...).
func (o *OS) ObjectTypeName(root introspect.Pa, body introspect.Va) (string, error) {
	ti, err := o.ObjectTypeIndex(root, body)
	if err != nil {
		return "", err
	}
	if ti < 2 { // 0 and 1 are never types (1 is a marker value)
		return "", fmt.Errorf("object %v type index %d: %w", body, ti, ErrCorrupt)
	}
	typ, err := o.kernelPtr(root, o.base+introspect.Va(o.l.symTypeIndexTable)+introspect.Va(8*uint64(ti)), "ObTypeIndexTable entry")
	if err != nil {
		return "", fmt.Errorf("object %v type index %d: %w", body, ti, err)
	}
	if n, ok := o.typeNames[typ]; ok {
		return n, nil
	}
	n, err := o.UnicodeString(root, typ+introspect.Va(o.l.otName))
	if err != nil {
		return "", fmt.Errorf("OBJECT_TYPE %v name: %w", typ, err)
	}
	if len(o.typeNames) < 256 {
		o.typeNames[typ] = n
	}
	return n, nil
}

// objectNameInfo returns the name and directory of an object from its
// OBJECT_HEADER_NAME_INFO; ok is false for an unnamed object. The optional
// headers' offsets are computed from the profile's sizes rather than read
// from ObpInfoMaskToOffset, so a forged table cannot mislead us.
func (o *OS) objectNameInfo(root introspect.Pa, body introspect.Va) (name string, dir introspect.Va, ok bool, err error) {
	hdr := o.ObjectHeader(body)
	mask, err := o.u8(root, hdr+introspect.Va(o.l.ohInfoMask), "OBJECT_HEADER.InfoMask")
	if err != nil {
		return "", 0, false, err
	}
	if mask&infoName == 0 {
		return "", 0, false, nil
	}
	off := o.l.nameInfoSize
	if mask&infoCreator != 0 {
		off += o.l.creatorInfoSize
	}
	ni := hdr - introspect.Va(off)
	name, err = o.UnicodeString(root, ni+introspect.Va(o.l.nameInfoName))
	if err != nil {
		return "", 0, false, fmt.Errorf("object %v name: %w", body, err)
	}
	dir, err = o.ptr(root, ni+introspect.Va(o.l.nameInfoDir), "OBJECT_HEADER_NAME_INFO.Directory")
	if err != nil {
		return "", 0, false, err
	}
	return name, dir, true, nil
}

// ObjectName returns an object's own name ("" when unnamed).
func (o *OS) ObjectName(root introspect.Pa, body introspect.Va) (string, error) {
	n, _, _, err := o.objectNameInfo(root, body)
	return n, err
}

// ObjectPath returns an object's full name in the object namespace, e.g.
// \Device\HarddiskVolume1, following its directory chain (bounded by
// MaxNameDepth). It returns "" for an unnamed object.
func (o *OS) ObjectPath(root introspect.Pa, body introspect.Va) (string, error) {
	var parts []string
	cur := body
	for depth := 0; ; depth++ {
		if depth >= MaxNameDepth {
			return "", fmt.Errorf("object %v: directory chain deeper than %d: %w", body, MaxNameDepth, ErrCorrupt)
		}
		if !IsKernelVA(cur) {
			return "", fmt.Errorf("object directory %v: %w", cur, ErrCorrupt)
		}
		name, dir, ok, err := o.objectNameInfo(root, cur)
		if err != nil {
			return "", err
		}
		if !ok || name == `\` {
			break // the root directory is named "\"
		}
		parts = append(parts, name)
		if dir == 0 {
			break
		}
		cur = dir
	}
	if len(parts) == 0 {
		return "", nil
	}
	var b strings.Builder
	for i := len(parts) - 1; i >= 0; i-- {
		b.WriteByte('\\')
		b.WriteString(parts[i])
	}
	return b.String(), nil
}

// FileObjectPath returns a FILE_OBJECT's full path: the device object's
// path followed by the file name, e.g.
// \Device\HarddiskVolume1\Windows\System32\x.dll.
func (o *OS) FileObjectPath(root introspect.Pa, file introspect.Va) (string, error) {
	name, err := o.UnicodeString(root, file+introspect.Va(o.l.foFileName))
	if err != nil {
		return "", fmt.Errorf("FILE_OBJECT %v: %w", file, err)
	}
	dev, err := o.ptr(root, file+introspect.Va(o.l.foDevice), "FILE_OBJECT.DeviceObject")
	if err != nil {
		return "", err
	}
	if dev == 0 {
		return name, nil
	}
	dpath, err := o.ObjectPath(root, dev)
	if err != nil {
		return "", fmt.Errorf("FILE_OBJECT %v device: %w", file, err)
	}
	return dpath + name, nil
}

// ObjectAttributesName returns the name an OBJECT_ATTRIBUTES (usually in
// user memory of the calling process proc, read under root) designates:
// ObjectName, prefixed with the path of the RootDirectory handle's object
// when there is one. ok is false when ObjectName is NULL.
func (o *OS) ObjectAttributesName(root introspect.Pa, proc, oa introspect.Va) (name string, ok bool, err error) {
	if oa == 0 {
		return "", false, nil
	}
	us, err := o.ptr(root, oa+introspect.Va(o.l.oaName), "OBJECT_ATTRIBUTES.ObjectName")
	if err != nil {
		return "", false, err
	}
	if us == 0 {
		return "", false, nil
	}
	name, err = o.UnicodeString(root, us)
	if err != nil {
		return "", false, err
	}
	rootDir, err := o.u64(root, oa+introspect.Va(o.l.oaRoot), "OBJECT_ATTRIBUTES.RootDirectory")
	if err != nil {
		return "", false, err
	}
	name, err = o.underRoot(root, proc, rootDir, name)
	return name, err == nil, err
}

// underRoot joins name to the path of the object the RootDirectory handle
// rootDir refers to (a file's path or a named object's); a zero handle
// leaves name as it is.
func (o *OS) underRoot(root introspect.Pa, proc introspect.Va, rootDir uint64, name string) (string, error) {
	if rootDir == 0 {
		return name, nil
	}
	obj, err := o.HandleToObject(root, proc, rootDir)
	if err != nil {
		return "", fmt.Errorf("RootDirectory: %w", err)
	}
	typ, err := o.ObjectTypeName(root, obj)
	if err != nil {
		return "", fmt.Errorf("RootDirectory: %w", err)
	}
	var prefix string
	if typ == "File" {
		prefix, err = o.FileObjectPath(root, obj)
	} else {
		prefix, err = o.ObjectPath(root, obj)
	}
	if err != nil {
		return "", fmt.Errorf("RootDirectory: %w", err)
	}
	if name == "" {
		return prefix, nil
	}
	if !strings.HasSuffix(prefix, `\`) {
		prefix += `\`
	}
	return prefix + name, nil
}

// Information classes of NtSetInformationFile (FILE_INFORMATION_CLASS)
// that rename or delete.
const (
	FileRenameInformation        = 10
	FileDispositionInformation   = 13
	FileDispositionInformationEx = 64
	FileRenameInformationEx      = 65
)

// Layout of FILE_RENAME_INFORMATION on x64 (a documented ABI the kernel's
// PDB has no type for): ReplaceIfExists or Flags, RootDirectory, then
// FileNameLength and the name's UTF-16 bytes.
const (
	renameRootDir    = 8
	renameNameLength = 16
	renameName       = 20
)

// fileDispositionDelete is FILE_DISPOSITION_DELETE of
// FILE_DISPOSITION_INFORMATION_EX.Flags.
const fileDispositionDelete = 0x1

// RenameTarget returns the new name of a FILE_RENAME_INFORMATION(_EX) of
// length bytes at info in the caller's memory, joined to its
// RootDirectory's path when it has one. The name's length is bounded by
// length and MaxUnicodeBytes.
func (o *OS) RenameTarget(root introspect.Pa, proc, info introspect.Va, length uint64) (string, error) {
	if info == 0 || length < renameName {
		return "", fmt.Errorf("FILE_RENAME_INFORMATION at %v, %d bytes: %w", info, length, ErrCorrupt)
	}
	n, err := o.mem.ReadU32(root, info+renameNameLength)
	if err != nil {
		return "", fmt.Errorf("read FILE_RENAME_INFORMATION.FileNameLength at %v: %w", info, err)
	}
	if n == 0 || n&1 != 0 || n > MaxUnicodeBytes || uint64(n) > length-renameName {
		return "", fmt.Errorf("FILE_RENAME_INFORMATION at %v: FileNameLength %d of %d bytes: %w", info, n, length, ErrCorrupt)
	}
	name, err := o.mem.ReadUTF16(root, info+renameName, int(n), MaxUnicodeBytes)
	if err != nil {
		return "", fmt.Errorf("FILE_RENAME_INFORMATION at %v: %w", info, err)
	}
	rootDir, err := o.u64(root, info+renameRootDir, "FILE_RENAME_INFORMATION.RootDirectory")
	if err != nil {
		return "", err
	}
	return o.underRoot(root, proc, rootDir, name)
}

// DispositionDeletes reports whether a FILE_DISPOSITION_INFORMATION
// (DeleteFile, a BOOLEAN) or, for FileDispositionInformationEx, a
// FILE_DISPOSITION_INFORMATION_EX (Flags) at info marks the file for
// deletion.
func (o *OS) DispositionDeletes(root introspect.Pa, info introspect.Va, class uint64) (bool, error) {
	if info == 0 {
		return false, fmt.Errorf("FILE_DISPOSITION_INFORMATION at NULL: %w", ErrCorrupt)
	}
	if class == FileDispositionInformationEx {
		f, err := o.mem.ReadU32(root, info)
		if err != nil {
			return false, fmt.Errorf("read FILE_DISPOSITION_INFORMATION_EX.Flags at %v: %w", info, err)
		}
		return f&fileDispositionDelete != 0, nil
	}
	b, err := o.mem.ReadU8(root, info)
	if err != nil {
		return false, fmt.Errorf("read FILE_DISPOSITION_INFORMATION.DeleteFile at %v: %w", info, err)
	}
	return b != 0, nil
}

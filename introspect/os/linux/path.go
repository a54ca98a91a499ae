package linux

import (
	"bytes"
	"fmt"

	"github.com/vmi-exporter/vmi-exporter/introspect"
)

// File mode bits of inode.i_mode (include/uapi/linux/stat.h).
const (
	SIFMT  = 0o170000
	SIFREG = 0o100000
	SIFDIR = 0o040000
)

// OpenFile is one descriptor of a task.
type OpenFile struct {
	FD   int
	File introspect.Va // struct file
}

// FilePath returns the full path of a struct file, from its f_path.
func (o *OS) FilePath(file introspect.Va) (string, error) {
	if !o.isKernelPtr(uint64(file)) {
		return "", fmt.Errorf("file %v: %w", file, ErrBadPointer)
	}
	return o.PathAt(file + introspect.Va(o.off.filePath))
}

// FileMode returns the i_mode of the file's inode (f_inode).
func (o *OS) FileMode(file introspect.Va) (uint16, error) {
	if !o.isKernelPtr(uint64(file)) {
		return 0, fmt.Errorf("file %v: %w", file, ErrBadPointer)
	}
	var inode introspect.Va
	var err error
	if o.off.hasFileInode {
		inode, err = o.ptr(file+introspect.Va(o.off.fileInode), "file f_inode")
	} else {
		var d introspect.Va
		d, err = o.ptr(file+introspect.Va(o.off.filePath+o.off.pathDentry), "file f_path.dentry")
		if err == nil {
			inode, err = o.ptr(d+introspect.Va(o.off.dentryInode), "dentry d_inode")
		}
	}
	if err != nil {
		return 0, err
	}
	m, err := o.mem.ReadU16(o.kroot, inode+introspect.Va(o.off.inodeMode))
	if err != nil {
		return 0, fmt.Errorf("inode %v i_mode: %w", inode, err)
	}
	return m, nil
}

// IsRegular reports whether the file is a regular file (not a pipe, socket,
// tty or other special file).
func (o *OS) IsRegular(file introspect.Va) (bool, error) {
	m, err := o.FileMode(file)
	return m&SIFMT == SIFREG, err
}

// DentryPath returns the absolute path of dentry d seen through mount mnt
// (a struct vfsmount embedded in a struct mount), walking d_parent up to the
// mount's root and then crossing to the parent mount at its mountpoint, as
// the kernel's prepend_path does, until the namespace's root mount (its own
// parent). The walk is bounded by MaxDepth steps and PathMax bytes; cycles
// give ErrLoop.
func (o *OS) DentryPath(mnt, d introspect.Va) (string, error) {
	// Components are prepended into the tail of buf.
	var buf [PathMax]byte
	pos := len(buf)
	// A dentry may legitimately be passed twice in different mounts (a
	// bind mount of / inside itself), so the walk's state is the pair.
	type step struct{ d, mnt introspect.Va }
	var seen [MaxDepth]step
	nseen := 0
	visit := func(v step) error {
		for _, s := range seen[:nseen] {
			if s == v {
				return fmt.Errorf("dentry walk revisits %v in mount %v: %w", v.d, v.mnt, ErrLoop)
			}
		}
		if nseen == len(seen) {
			return fmt.Errorf("dentry walk beyond %d steps: %w", MaxDepth, ErrTooDeep)
		}
		seen[nseen] = v
		nseen++
		return nil
	}
	if !o.isKernelPtr(uint64(mnt)) || !o.isKernelPtr(uint64(d)) {
		return "", fmt.Errorf("path (mnt %v, dentry %v): %w", mnt, d, ErrBadPointer)
	}
	root, err := o.ptr(mnt+introspect.Va(o.off.vfsmountRoot), "vfsmount mnt_root")
	if err != nil {
		return "", err
	}
	for {
		if err := visit(step{d, mnt}); err != nil {
			return "", err
		}
		parent, err := o.ptr(d+introspect.Va(o.off.dentryParent), "dentry d_parent")
		if err != nil {
			return "", err
		}
		if d == root || d == parent {
			// At the root of this mount (or of an unattached tree):
			// continue in the parent mount, unless this is the top.
			m := mnt - introspect.Va(o.off.mountMnt)
			pm, err := o.ptr(m+introspect.Va(o.off.mountParent), "mount mnt_parent")
			if err != nil {
				return "", err
			}
			if pm == m || d != root {
				break
			}
			if d, err = o.ptr(m+introspect.Va(o.off.mountMountpoint), "mount mnt_mountpoint"); err != nil {
				return "", err
			}
			mnt = pm + introspect.Va(o.off.mountMnt)
			if root, err = o.ptr(mnt+introspect.Va(o.off.vfsmountRoot), "vfsmount mnt_root"); err != nil {
				return "", err
			}
			continue
		}
		name, err := o.dentryName(d)
		if err != nil {
			return "", err
		}
		if len(name)+1 > pos {
			return "", fmt.Errorf("path longer than %d bytes: %w", PathMax, ErrTooLong)
		}
		pos -= len(name)
		copy(buf[pos:], name)
		pos--
		buf[pos] = '/'
		d = parent
	}
	if pos == len(buf) {
		return "/", nil
	}
	return string(buf[pos:]), nil
}

// dentryName reads d_name (a struct qstr: len and a pointer to the bytes).
func (o *OS) dentryName(d introspect.Va) ([]byte, error) {
	q := d + introspect.Va(o.off.dentryName)
	n, err := o.mem.ReadU32(o.kroot, q+introspect.Va(o.off.qstrLen))
	if err != nil {
		return nil, fmt.Errorf("dentry %v name length: %w", d, err)
	}
	if n == 0 || n > NameMax {
		return nil, fmt.Errorf("dentry %v name length %d: %w", d, n, ErrBadValue)
	}
	p, err := o.ptr(q+introspect.Va(o.off.qstrName), "dentry d_name.name")
	if err != nil {
		return nil, err
	}
	var b [NameMax]byte
	name := b[:n]
	if err := o.mem.Read(o.kroot, p, name); err != nil {
		return nil, fmt.Errorf("dentry %v name: %w", d, err)
	}
	if bytes.IndexByte(name, 0) >= 0 || bytes.IndexByte(name, '/') >= 0 {
		return nil, fmt.Errorf("dentry %v name %q: %w", d, name, ErrBadValue)
	}
	return name, nil
}

// fdtable returns the task's current fd array and max_fds.
func (o *OS) fdtable(task introspect.Va) (fd introspect.Va, max uint32, err error) {
	if !o.isKernelPtr(uint64(task)) {
		return 0, 0, fmt.Errorf("task %v: %w", task, ErrBadPointer)
	}
	files, err := o.ptr(task+introspect.Va(o.off.taskFiles), "task files")
	if err != nil {
		return 0, 0, err
	}
	fdt, err := o.ptr(files+introspect.Va(o.off.filesFdt), "files_struct fdt")
	if err != nil {
		return 0, 0, err
	}
	max, err = o.mem.ReadU32(o.kroot, fdt+introspect.Va(o.off.fdtMaxFDs))
	if err != nil {
		return 0, 0, fmt.Errorf("fdtable %v max_fds: %w", fdt, err)
	}
	fd, err = o.ptr(fdt+introspect.Va(o.off.fdtFD), "fdtable fd")
	return fd, max, err
}

// FileOfFD returns the struct file of descriptor fd of the task; 0 with no
// error when the slot is empty.
func (o *OS) FileOfFD(task introspect.Va, fd int) (introspect.Va, error) {
	arr, max, err := o.fdtable(task)
	if err != nil {
		return 0, err
	}
	if fd < 0 || uint64(fd) >= uint64(max) {
		return 0, fmt.Errorf("fd %d of task %v (max_fds %d): %w", fd, task, max, ErrBadValue)
	}
	f, err := o.mem.ReadVa(o.kroot, arr+introspect.Va(8*fd))
	if err != nil {
		return 0, fmt.Errorf("fd %d of task %v: %w", fd, task, err)
	}
	if f != 0 && !o.isKernelPtr(uint64(f)) {
		return 0, fmt.Errorf("fd %d of task %v = %#x: %w", fd, task, uint64(f), ErrBadPointer)
	}
	return f, nil
}

// FDPath returns the path of descriptor fd of the task.
func (o *OS) FDPath(task introspect.Va, fd int) (string, error) {
	f, err := o.FileOfFD(task, fd)
	if err != nil {
		return "", err
	}
	if f == 0 {
		return "", fmt.Errorf("fd %d of task %v is not open: %w", fd, task, ErrBadValue)
	}
	return o.FilePath(f)
}

// Files lists the open descriptors of a task, walking at most
// Options.MaxFDs slots. When max_fds is larger, the first slots are
// returned with an error wrapping ErrTooLong.
func (o *OS) Files(task introspect.Va) ([]OpenFile, error) {
	arr, max, err := o.fdtable(task)
	if err != nil {
		return nil, err
	}
	n := int(min(uint64(max), uint64(o.maxFDs)))
	var out []OpenFile
	var slots [64]byte
	for i := 0; i < n; i += len(slots) / 8 {
		k := min(len(slots)/8, n-i)
		if err := o.mem.Read(o.kroot, arr+introspect.Va(8*i), slots[:8*k]); err != nil {
			return out, fmt.Errorf("fd array of task %v at %d: %w", task, i, err)
		}
		for j := range k {
			f := le64(slots[8*j:])
			if f == 0 {
				continue
			}
			if !o.isKernelPtr(f) {
				return out, fmt.Errorf("fd %d of task %v = %#x: %w", i+j, task, f, ErrBadPointer)
			}
			out = append(out, OpenFile{FD: i + j, File: introspect.Va(f)})
		}
	}
	if uint64(max) > uint64(o.maxFDs) {
		return out, fmt.Errorf("task %v max_fds %d above bound %d: %w", task, max, o.maxFDs, ErrTooLong)
	}
	return out, nil
}

// Pwd returns the task's working directory (fs->pwd) as a path.
func (o *OS) Pwd(task introspect.Va) (string, error) {
	if !o.off.hasFS || !o.off.hasPwd {
		return "", fmt.Errorf("fs_struct.pwd not in profile")
	}
	if !o.isKernelPtr(uint64(task)) {
		return "", fmt.Errorf("task %v: %w", task, ErrBadPointer)
	}
	fs, err := o.ptr(task+introspect.Va(o.off.taskFS), "task fs")
	if err != nil {
		return "", err
	}
	p := fs + introspect.Va(o.off.fsPwd)
	mnt, err := o.ptr(p+introspect.Va(o.off.pathMnt), "fs pwd.mnt")
	if err != nil {
		return "", err
	}
	d, err := o.ptr(p+introspect.Va(o.off.pathDentry), "fs pwd.dentry")
	if err != nil {
		return "", err
	}
	return o.DentryPath(mnt, d)
}

func le64(b []byte) uint64 {
	_ = b[7]
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

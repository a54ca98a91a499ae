package linux

import (
	"errors"
	"fmt"
	"strings"

	"github.com/vmi-exporter/vmi-exporter/introspect/profile"
)

// offsets are the structure member offsets the layer reads, resolved once
// from the profile. has* flags mark optional members.
type offsets struct {
	taskPID, taskTGID, taskComm, taskRealParent, taskGroupLeader uint64
	taskMM, taskFiles, taskFS, taskSignal                        uint64
	hasFS, hasSignal                                             bool
	taskTasks                                                    uint64
	hasTasks                                                     bool

	mmExeFile, mmPgd uint64
	hasPgd           bool
	// mm_struct.arg_start/arg_end (process.exec argv) and
	// task_struct.exit_code (process.exit status).
	mmArgStart, mmArgEnd uint64
	hasArgs              bool
	taskExitCode         uint64
	hasExitCode          bool

	filePath, fileInode uint64
	hasFileInode        bool
	// file.f_flags and f_mode: O_CREAT and FMODE_CREATED at vfs_open.
	fileFlags, fileMode uint64
	hasFileFlags        bool
	// io_kiocb.file/opcode and io_rw.addr/len: io_uring writes.
	ioReqFile, ioReqOpcode, ioRwAddr, ioRwLen uint64
	hasIOUring                                bool

	pathMnt, pathDentry uint64

	dentryParent, dentryName, dentryInode uint64
	qstrName, qstrLen                     uint64

	inodeMode uint64

	filesFdt           uint64
	fdtMaxFDs, fdtFD   uint64
	mountMnt           uint64
	mountParent        uint64
	mountMountpoint    uint64
	vfsmountRoot       uint64
	fsPwd, fsRoot      uint64
	signalLive         uint64
	openHowFlags       uint64
	hasOpenHow, hasPwd bool
}

// field resolves a member path such as "f_path.dentry" in struct s. Members
// of anonymous structs and unions are found whether the profile flattened
// them into the parent or kept them as members of a named type.
func field(p *profile.Profile, s, path string) (uint64, error) {
	var total uint64
	cur := s
	parts := strings.Split(path, ".")
	for i, name := range parts {
		f, err := member(p, cur, name, 0)
		if err != nil {
			return 0, err
		}
		total += f.Offset
		if i < len(parts)-1 {
			if f.Type.Kind != profile.KindStruct || f.Type.Name == "" {
				return 0, fmt.Errorf("field %s.%s is not a named struct: %w", cur, name, profile.ErrNotFound)
			}
			cur = f.Type.Name
		}
	}
	return total, nil
}

// member finds name in struct s, descending into anonymous members.
func member(p *profile.Profile, s, name string, depth int) (profile.Field, error) {
	f, err := p.Field(s, name)
	if err == nil || depth >= 4 {
		return f, err
	}
	st, serr := p.Struct(s)
	if serr != nil {
		return f, err
	}
	for fname, af := range st.Fields {
		if af.Type.Kind != profile.KindStruct || af.Type.Name == "" || !anonymous(fname) {
			continue
		}
		inner, ierr := member(p, af.Type.Name, name, depth+1)
		if ierr == nil {
			inner.Offset += af.Offset
			return inner, nil
		}
	}
	return f, err
}

func anonymous(name string) bool {
	return name == "" || strings.HasPrefix(name, "__anon") || strings.HasPrefix(name, "unnamed")
}

func resolveOffsets(p *profile.Profile) (offsets, error) {
	var o offsets
	var errs []error
	req := func(dst *uint64, s, path string) {
		v, err := field(p, s, path)
		if err != nil {
			errs = append(errs, err)
		}
		*dst = v
	}
	opt := func(dst *uint64, s, path string) bool {
		v, err := field(p, s, path)
		*dst = v
		return err == nil
	}
	req(&o.taskPID, "task_struct", "pid")
	req(&o.taskTGID, "task_struct", "tgid")
	req(&o.taskComm, "task_struct", "comm")
	req(&o.taskRealParent, "task_struct", "real_parent")
	req(&o.taskGroupLeader, "task_struct", "group_leader")
	req(&o.taskMM, "task_struct", "mm")
	req(&o.taskFiles, "task_struct", "files")
	o.hasFS = opt(&o.taskFS, "task_struct", "fs")
	o.hasSignal = opt(&o.taskSignal, "task_struct", "signal")
	o.hasTasks = opt(&o.taskTasks, "task_struct", "tasks")

	req(&o.mmExeFile, "mm_struct", "exe_file")
	o.hasPgd = opt(&o.mmPgd, "mm_struct", "pgd")
	o.hasArgs = opt(&o.mmArgStart, "mm_struct", "arg_start") && opt(&o.mmArgEnd, "mm_struct", "arg_end")
	o.hasExitCode = opt(&o.taskExitCode, "task_struct", "exit_code")

	req(&o.filePath, "file", "f_path")
	o.hasFileInode = opt(&o.fileInode, "file", "f_inode")
	o.hasFileFlags = opt(&o.fileFlags, "file", "f_flags") && opt(&o.fileMode, "file", "f_mode")
	o.hasIOUring = opt(&o.ioReqFile, "io_kiocb", "file") && opt(&o.ioReqOpcode, "io_kiocb", "opcode") &&
		opt(&o.ioRwAddr, "io_rw", "addr") && opt(&o.ioRwLen, "io_rw", "len")
	req(&o.pathMnt, "path", "mnt")
	req(&o.pathDentry, "path", "dentry")

	req(&o.dentryParent, "dentry", "d_parent")
	req(&o.dentryName, "dentry", "d_name")
	req(&o.dentryInode, "dentry", "d_inode")
	req(&o.qstrName, "qstr", "name")
	if !opt(&o.qstrLen, "qstr", "len") {
		// struct { u32 hash; u32 len; } overlaid by u64 hash_len.
		if opt(&o.qstrLen, "qstr", "hash_len") {
			o.qstrLen += 4
		} else {
			errs = append(errs, fmt.Errorf("field qstr.len: %w", profile.ErrNotFound))
		}
	}
	req(&o.inodeMode, "inode", "i_mode")

	req(&o.filesFdt, "files_struct", "fdt")
	req(&o.fdtMaxFDs, "fdtable", "max_fds")
	req(&o.fdtFD, "fdtable", "fd")

	req(&o.mountMnt, "mount", "mnt")
	req(&o.mountParent, "mount", "mnt_parent")
	req(&o.mountMountpoint, "mount", "mnt_mountpoint")
	req(&o.vfsmountRoot, "vfsmount", "mnt_root")

	o.hasPwd = opt(&o.fsPwd, "fs_struct", "pwd") && opt(&o.fsRoot, "fs_struct", "root")
	if o.hasSignal && !opt(&o.signalLive, "signal_struct", "live") {
		o.hasSignal = false
	}
	o.hasOpenHow = opt(&o.openHowFlags, "open_how", "flags")
	return o, errors.Join(errs...)
}

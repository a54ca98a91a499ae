// Package bootinfo is the JSON line "testguest boot" prints once the test
// guest's workload runs: what an introspection tool needs to reach it. It
// is the whole contract between cmd/testguest and the exporter's demo,
// which runs testguest rather than linking the test guest in.
package bootinfo

// Info describes a booted test guest.
type Info struct {
	PID           int      `json:"pid"`                  // QEMU's process id
	Dir           string   `json:"dir"`                  // directory of the sockets
	QMP           string   `json:"qmp"`                  // QMP unix socket
	GDB           string   `json:"gdb"`                  // gdbstub unix socket
	RAM           string   `json:"ram"`                  // shared RAM file
	RAMSize       int64    `json:"ram_size"`             // guest RAM in bytes
	PluginSHM     string   `json:"plugin_shm,omitempty"` // the vmi-hooks plugin's shared file, when loaded
	Kernel        string   `json:"kernel"`               // the guest's kernel image
	KernelVersion string   `json:"kernel_version"`       // its Debian version
	Initrd        string   `json:"initrd"`               // the guest's initramfs
	BootSeconds   float64  `json:"boot_seconds"`         // time to the workload's start
	QEMUArgs      []string `json:"qemu_args"`            // QEMU's command line
}

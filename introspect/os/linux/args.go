package linux

import (
	"fmt"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/arch/amd64"
)

// maxArgs bounds argument indexes: no kernel function takes more.
const maxArgs = 32

// Arg returns the i-th integer argument (from 0) of a function whose entry
// the vCPU with registers regs has just reached, under the System V AMD64
// convention: six registers, then the stack above the return address.
func (o *OS) Arg(regs *amd64.Registers, i int) (uint64, error) {
	if v, ok := regs.SysVArg(i); ok {
		return v, nil
	}
	if i < 0 || i >= maxArgs {
		return 0, fmt.Errorf("argument %d: %w", i, ErrBadValue)
	}
	// [RSP] is the return address; argument 6 follows it.
	va := introspect.Va(regs.RSP + 8*uint64(i-6+1))
	v, err := o.mem.ReadU64(UserRoot(regs), va)
	if err != nil {
		return 0, fmt.Errorf("argument %d on the stack at %v: %w", i, va, err)
	}
	return v, nil
}

// UserString reads a NUL-terminated string of at most max bytes from user
// memory of the address space of the vCPU with registers regs. Addresses in
// the kernel half are refused: a user pointer argument must not make the
// introspector read kernel memory on the guest's behalf.
func (o *OS) UserString(regs *amd64.Registers, va introspect.Va, max int) (string, error) {
	if va == 0 || o.isKernelPtr(uint64(va)) {
		return "", fmt.Errorf("user string at %v: %w", va, ErrBadPointer)
	}
	s, err := o.mem.ReadCString(UserRoot(regs), va, max)
	if err != nil {
		return s, fmt.Errorf("user string at %v: %w", va, err)
	}
	return s, nil
}

// ReadKernel fills p from kernel virtual memory.
func (o *OS) ReadKernel(va introspect.Va, p []byte) error {
	return o.mem.Read(o.kroot, va, p)
}

// ReadKernelU64 reads a 64-bit value from kernel virtual memory.
func (o *OS) ReadKernelU64(va introspect.Va) (uint64, error) {
	return o.mem.ReadU64(o.kroot, va)
}

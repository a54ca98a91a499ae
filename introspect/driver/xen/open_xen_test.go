//go:build xen

package xen

import (
	"os"
	"testing"
)

// Without a hypervisor (no /dev/xen/privcmd, no xenstored) attaching must
// fail with an error and leave nothing open; with one, the domain id used
// here does not exist.
func TestOpenWithoutDomain(t *testing.T) {
	if _, err := os.Stat("/dev/xen/privcmd"); err == nil {
		t.Log("running under Xen: expecting the unknown-domain error path")
	}
	d, err := OpenDomain(0x7ff0, Config{})
	if err == nil {
		d.Close()
		t.Fatal("OpenDomain of a domain that cannot exist succeeded")
	}
	t.Log(err)
	if _, err := Open("vmi-exporter-no-such-domain", Config{}); err == nil {
		t.Fatal("Open of an unknown name succeeded")
	} else {
		t.Log(err)
	}
}

package testguest

import (
	"strings"
	"testing"
)

func TestParseAptShow(t *testing.T) {
	out := `Package: linux-image-cloud-amd64
Source: linux-signed-amd64 (6.1.192+2)
Version: 6.1.192-2
Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)
Description: Linux for x86-64 cloud (meta-package)

Package: busybox-static
Version: 1:1.35.0-4+deb12u1+b1
Depends: libc6 (>= 2.34)
`
	r, err := parseAptShow([]byte(out), DefaultKernelMetapackage)
	if err != nil {
		t.Fatal(err)
	}
	if r.KernelPackage != "linux-image-6.1.0-56-cloud-amd64" || r.KernelVersion != "6.1.192-2" || r.BusyboxVersion != "1:1.35.0-4+deb12u1+b1" {
		t.Errorf("got %+v", r)
	}
	for name, bad := range map[string]string{
		"no kernel dep":   strings.Replace(out, "Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)", "Depends: foo", 1),
		"unversioned dep": strings.Replace(out, " (= 6.1.192-2)", "", 1),
		"no busybox":      strings.Replace(out, "Package: busybox-static", "Package: other", 1),
		"empty":           "",
	} {
		if _, err := parseAptShow([]byte(bad), DefaultKernelMetapackage); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestFileSafe(t *testing.T) {
	if got := fileSafe("1:7.2+dfsg/x"); got != "1%3a7.2+dfsg_x" {
		t.Errorf("fileSafe = %q", got)
	}
}

// Package discovery finds the guests of a host by itself (libvirt, Xen's
// XenStore, a watched directory, the static configuration) and follows them
// as they come and go. Each Source reports its whole current set of targets
// whenever it changes; the collector reconciles the union of every source's
// set against the guests it supervises: new targets are attached, vanished
// ones detached (hooks removed), changed ones re-attached, unchanged ones
// left alone.
package discovery

import (
	"context"

	"github.com/vmi-exporter/vmi-exporter/collector"
)

// Target is one guest a Source found.
type Target struct {
	// Guest is how to reach the guest; Guest.Name is unique across every
	// source (a source prefixes or otherwise qualifies names it cannot
	// guarantee unique) and is the domain label of its series.
	Guest collector.GuestConfig
	// Meta are identity labels of the guest (for example libvirt's name,
	// UUID and selected <metadata> keys): they go on vmi_guest_info only,
	// never on every series, so cardinality stays bounded. Keys are
	// Prometheus label names.
	Meta map[string]string
	// NotAttachable, when not empty, says why the guest was found but
	// cannot be watched (for example "no_ram_backing", "no_plugin"): it is
	// reported (metric and log, once per change) and not attached, and so
	// never retried in a loop.
	NotAttachable string
}

// Source finds guests.
type Source interface {
	// Name identifies the source in logs and metrics ("libvirt", "xen",
	// "dir", "static").
	Name() string
	// Run reports the source's complete current set of targets through
	// update, once at start and again whenever it changes, until ctx ends
	// or the source fails for good. update is called from one goroutine at
	// a time and must not be retained past the call's slice contents.
	Run(ctx context.Context, update func([]Target)) error
}

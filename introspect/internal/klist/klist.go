// Package klist walks a kernel's circular doubly-linked lists (Linux's
// list_head, Windows' LIST_ENTRY: the forward pointer first) in guest
// memory, where a guest can forge any pointer.
package klist

import (
	"errors"
	"fmt"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/paging"
)

// ErrLoop is wrapped when an entry comes back before the walk returns to
// the head.
var ErrLoop = errors.New("loop in guest structure")

// Walk follows the forward pointers of the list whose head is the link at
// head, reading each with next, and calls visit with the link address of
// every entry after the head, in order, until the list comes back to head.
// It stops with an error wrapping ErrLoop at an entry seen twice, one
// wrapping paging.ErrTooLong rather than visit more than max entries, or
// the first error of next or visit.
func Walk(head introspect.Va, max int, next func(link introspect.Va) (introspect.Va, error), visit func(link introspect.Va) error) error {
	seen := make(map[introspect.Va]struct{})
	for cur := head; ; {
		n, err := next(cur)
		if err != nil {
			return err
		}
		if n == head {
			return nil
		}
		if len(seen) >= max {
			return fmt.Errorf("list longer than %d: %w", max, paging.ErrTooLong)
		}
		if _, dup := seen[n]; dup {
			return fmt.Errorf("entry %v seen twice: %w", n, ErrLoop)
		}
		seen[n] = struct{}{}
		if err := visit(n); err != nil {
			return err
		}
		cur = n
	}
}

// Package tagref counts the references to one object by tag, as the
// breakpoint manager and the page-table monitor keep them: several callers
// may add the same object, each under its tag, and it lives until the last
// reference is dropped.
package tagref

import "slices"

// Counts are the references to one object. The zero value has none.
type Counts struct {
	tags  []string // distinct tags, in the order they first came
	n     map[string]int
	total int
}

// Add adds a reference with tag.
func (c *Counts) Add(tag string) {
	if c.n == nil {
		c.n = map[string]int{}
	}
	if c.n[tag] == 0 {
		c.tags = append(c.tags, tag)
	}
	c.n[tag]++
	c.total++
}

// Has reports whether a reference with tag is held.
func (c *Counts) Has(tag string) bool { return c.n[tag] > 0 }

// Drop removes one reference with tag, which must be held (see Has), and
// reports whether it was the last reference of any tag.
func (c *Counts) Drop(tag string) (last bool) {
	c.total--
	c.n[tag]--
	if c.n[tag] == 0 {
		delete(c.n, tag)
		c.tags = slices.DeleteFunc(c.tags, func(t string) bool { return t == tag })
	}
	return c.total == 0
}

// Total returns the number of references held.
func (c *Counts) Total() int { return c.total }

// Tags returns the distinct tags held, in the order they first came. The
// slice is the Counts' own: valid until the next Add or Drop.
func (c *Counts) Tags() []string { return c.tags }

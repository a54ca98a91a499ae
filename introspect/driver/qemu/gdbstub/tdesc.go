package gdbstub

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// Register describes one register of the target description.
type Register struct {
	Name    string
	Num     int // the number used by p/P packets and in T stop replies
	BitSize int
	Offset  int // byte offset in the reply to g, when Num < the g count
	Feature string
}

// TargetDesc is a parsed target description: the registers the stub
// exposes, by name and by number.
type TargetDesc struct {
	Architecture string
	Regs         []Register // in number order
	byName       map[string]int
}

// Reg returns the register named name.
func (t *TargetDesc) Reg(name string) (Register, bool) {
	i, ok := t.byName[name]
	if !ok {
		return Register{}, false
	}
	return t.Regs[i], true
}

// Limits on target descriptions: they come from the stub, which is trusted
// less than nothing.
const (
	maxTdescDepth = 4
	maxTdescFiles = 32
	maxTdescRegs  = 2048
	maxRegBits    = 4096
)

// ParseTargetDesc parses the description in file root, fetching each
// xi:include'd file with fetch (qXfer:features:read on a live stub).
// Register numbers follow the GDB rules: consecutive in document order,
// restarted at a reg's regnum attribute.
func ParseTargetDesc(root string, fetch func(name string) ([]byte, error)) (*TargetDesc, error) {
	p := &tdescParser{fetch: fetch, td: &TargetDesc{byName: make(map[string]int)}}
	if err := p.file(root, 0); err != nil {
		return nil, err
	}
	// g packet offsets: registers in number order, contiguous.
	off := 0
	sorted := make([]Register, 0, len(p.td.Regs))
	byNum := make(map[int]Register, len(p.td.Regs))
	maxNum := -1
	for _, r := range p.td.Regs {
		if _, dup := byNum[r.Num]; dup {
			return nil, fmt.Errorf("target description: register number %d used twice: %w", r.Num, ErrMalformed)
		}
		byNum[r.Num] = r
		maxNum = max(maxNum, r.Num)
	}
	for n := 0; n <= maxNum; n++ {
		r, ok := byNum[n]
		if !ok {
			continue
		}
		r.Offset = off
		off += r.BitSize / 8
		sorted = append(sorted, r)
	}
	p.td.Regs = sorted
	for i, r := range sorted {
		p.td.byName[r.Name] = i
	}
	return p.td, nil
}

type tdescParser struct {
	fetch   func(string) ([]byte, error)
	td      *TargetDesc
	files   int
	nextNum int
}

func (p *tdescParser) file(name string, depth int) error {
	if depth > maxTdescDepth {
		return fmt.Errorf("target description %s: includes nested too deep: %w", name, ErrMalformed)
	}
	p.files++
	if p.files > maxTdescFiles {
		return fmt.Errorf("target description %s: too many files: %w", name, ErrMalformed)
	}
	data, err := p.fetch(name)
	if err != nil {
		return fmt.Errorf("target description %s: %w", name, err)
	}
	dec := xml.NewDecoder(bytes.NewReader(data))
	dec.Strict = true
	// The stub's documents reference gdb-target.dtd and use the xi prefix
	// without declaring it; entities are not needed.
	feature := ""
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("target description %s: %v: %w", name, err, ErrMalformed)
		}
		se, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		switch se.Name.Local {
		case "architecture":
			var s string
			if err := dec.DecodeElement(&s, &se); err != nil {
				return fmt.Errorf("target description %s: %v: %w", name, err, ErrMalformed)
			}
			p.td.Architecture = s
		case "include":
			href := attr(se, "href")
			if href == "" {
				return fmt.Errorf("target description %s: include without href: %w", name, ErrMalformed)
			}
			if err := p.file(href, depth+1); err != nil {
				return err
			}
		case "feature":
			feature = attr(se, "name")
		case "reg":
			if err := p.reg(se, feature); err != nil {
				return fmt.Errorf("target description %s: %w", name, err)
			}
		}
	}
}

func (p *tdescParser) reg(se xml.StartElement, feature string) error {
	name := attr(se, "name")
	bits, err := strconv.Atoi(attr(se, "bitsize"))
	if name == "" || err != nil || bits <= 0 || bits > maxRegBits || bits%8 != 0 {
		return fmt.Errorf("bad reg %q bitsize %q: %w", name, attr(se, "bitsize"), ErrMalformed)
	}
	if s := attr(se, "regnum"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > 0xffff {
			return fmt.Errorf("bad regnum %q: %w", s, ErrMalformed)
		}
		p.nextNum = n
	}
	if len(p.td.Regs) >= maxTdescRegs || p.nextNum > 0xffff {
		return fmt.Errorf("too many registers: %w", ErrMalformed)
	}
	if _, dup := p.td.byName[name]; dup {
		return fmt.Errorf("register %q described twice: %w", name, ErrMalformed)
	}
	p.td.byName[name] = len(p.td.Regs)
	p.td.Regs = append(p.td.Regs, Register{Name: name, Num: p.nextNum, BitSize: bits, Feature: feature})
	p.nextNum++
	return nil
}

func attr(se xml.StartElement, name string) string {
	for _, a := range se.Attr {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

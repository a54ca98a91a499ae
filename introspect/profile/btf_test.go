package profile

import (
	"bytes"
	"testing"

	"github.com/cilium/ebpf/btf"
)

// testBTF builds a small BTF blob, marshals it as the kernel would and
// loads it back, so the conversion runs on real BTF encoding.
func testBTF(t testing.TB) *btf.Spec {
	t.Helper()
	u32 := &btf.Int{Name: "unsigned int", Size: 4}
	i32 := &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	u64 := &btf.Int{Name: "long long unsigned int", Size: 8}
	char := &btf.Int{Name: "char", Size: 1, Encoding: btf.Char}
	uchar := &btf.Int{Name: "unsigned char", Size: 1}
	pidT := &btf.Typedef{Name: "pid_t", Type: i32}

	// struct qstr { union { struct { u32 hash; u32 len; }; u64 hash_len; }; const unsigned char *name; }
	inner := &btf.Struct{Size: 8, Members: []btf.Member{
		{Name: "hash", Type: u32, Offset: 0},
		{Name: "len", Type: u32, Offset: 32},
	}}
	anonUnion := &btf.Union{Size: 8, Members: []btf.Member{
		{Type: inner, Offset: 0},
		{Name: "hash_len", Type: u64, Offset: 0},
	}}
	qstr := &btf.Struct{Name: "qstr", Size: 16, Members: []btf.Member{
		{Type: anonUnion, Offset: 0},
		{Name: "name", Type: &btf.Pointer{Target: &btf.Const{Type: uchar}}, Offset: 64},
	}}
	task := &btf.Struct{Name: "task_struct", Size: 64}
	named := &btf.Struct{Size: 8, Members: []btf.Member{
		{Name: "a", Type: u32, Offset: 0},
		{Name: "b", Type: u32, Offset: 32},
	}}
	task.Members = []btf.Member{
		{Name: "pid", Type: pidT, Offset: 0},
		{Name: "comm", Type: &btf.Array{Index: u32, Type: char, Nelems: 16}, Offset: 32},
		{Name: "real_parent", Type: &btf.Pointer{Target: task}, Offset: 192},
		{Name: "in_execve", Type: u32, Offset: 256 + 3, BitfieldSize: 1},
		{Name: "packed", Type: u32, Offset: 256 + 30, BitfieldSize: 4}, // straddles the u32 unit
		{Name: "sub", Type: named, Offset: 320},
		{Name: "d_name", Type: qstr, Offset: 384},
	}
	// A second, empty "task_struct" (a forward-declared copy) must not
	// replace the real one.
	fwdCopy := &btf.Struct{Name: "task_struct", Size: 0}
	b, err := btf.NewBuilder([]btf.Type{qstr, task, fwdCopy}, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := b.Marshal(nil, btf.KernelMarshalOptions())
	if err != nil {
		t.Fatal(err)
	}
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

func TestBTFTypes(t *testing.T) {
	types, err := BTFTypes(testBTF(t))
	if err != nil {
		t.Fatal(err)
	}
	p := &Profile{Name: "test", Types: types}
	for _, tc := range []struct {
		s, f string
		off  uint64
		kind Kind
	}{
		{"qstr", "hash", 0, KindBase},
		{"qstr", "len", 4, KindBase},
		{"qstr", "hash_len", 0, KindBase},
		{"qstr", "name", 8, KindPointer},
		{"task_struct", "pid", 0, KindBase},
		{"task_struct", "comm", 4, KindArray},
		{"task_struct", "real_parent", 24, KindPointer},
		{"task_struct", "in_execve", 32, KindBitfield},
		{"task_struct", "packed", 35, KindBitfield},
		{"task_struct", "sub", 40, KindStruct},
		{"task_struct", "sub.a", 40, KindBase},
		{"task_struct", "sub.b", 44, KindBase},
		{"task_struct", "d_name", 48, KindStruct},
	} {
		f, err := p.Field(tc.s, tc.f)
		if err != nil {
			t.Error(err)
			continue
		}
		if f.Offset != tc.off || f.Type.Kind != tc.kind {
			t.Errorf("%s.%s at %d kind %d, want %d kind %d", tc.s, tc.f, f.Offset, f.Type.Kind, tc.off, tc.kind)
		}
	}
	if s, _ := p.Size("task_struct"); s != 64 {
		t.Errorf("task_struct size %d (the empty copy won?)", s)
	}
	pid, _ := p.Field("task_struct", "pid")
	if pid.Type.Name != "int" || pid.Type.Size != 4 {
		t.Errorf("pid type %+v, want int through the typedef", pid.Type)
	}
	comm, _ := p.Field("task_struct", "comm")
	if comm.Type.Count != 16 || comm.Type.Size != 16 || comm.Type.Elem == nil || comm.Type.Elem.Name != "char" {
		t.Errorf("comm type %+v", comm.Type)
	}
	rp, _ := p.Field("task_struct", "real_parent")
	if rp.Type.Elem == nil || rp.Type.Elem.Kind != KindStruct || rp.Type.Elem.Name != "task_struct" {
		t.Errorf("real_parent type %+v", rp.Type)
	}
	ie, _ := p.Field("task_struct", "in_execve")
	if ie.Type.BitPos != 3 || ie.Type.BitLen != 1 || ie.Type.Elem == nil || ie.Type.Elem.Size != 4 {
		t.Errorf("in_execve %+v", ie.Type)
	}
	pk, _ := p.Field("task_struct", "packed")
	if pk.Type.BitPos != 6 || pk.Type.BitLen != 4 {
		t.Errorf("packed %+v: want bit 6 of byte 35", pk.Type)
	}
	if _, err := p.Field("task_struct", ""); err == nil {
		t.Error("anonymous member kept under an empty name")
	}
}

func BenchmarkBTFTypesSynthetic(b *testing.B) {
	spec := testBTF(b)
	for b.Loop() {
		if _, err := BTFTypes(spec); err != nil {
			b.Fatal(err)
		}
	}
}

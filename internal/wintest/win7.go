package wintest

import _ "embed"

// win7Fragment is a hand-written ISF fragment with the Windows 7 SP1 x64
// layout of the structures the OS layer uses (offsets from public
// documentation of that build: EPROCESS.UniqueProcessId at 0x180,
// ImageFileName at 0x2e0, OBJECT_HEADER.Body at 0x30, handle entries that
// hold the object header pointer with flag bits, no ObHeaderCookie, no
// KVA-shadow fields). Its symbol RVAs and PDB GUID are synthetic.
//
//go:embed testdata/win7sp1-fragment.json
var win7Fragment string

// win10Subset holds the structures and symbols of the Windows 10 22H2
// (19041) profile that the builder and the OS layer use, copied from the
// real ISF. It parses in microseconds, for fuzz targets whose workers
// build a guest at start-up.
//
//go:embed testdata/win10-19041-subset.json
var win10Subset string

#!/bin/sh
# Regenerates the PDB fixtures (tests do not need clang or lld):
#   apt-get install clang-14 lld-14; ./build.sh
# kernel.pdb: x86_64 DLL from kernel.c, objects.c and cxx.cpp.
# kernel32.pdb: the same C sources for i686 (4-byte pointers, "_" names).
# The expected values in ../../pdb_test.go come from
#   llvm-pdbutil dump -types -publics -section-headers <pdb>.
set -eu
cd "$(dirname "$0")"
# A fixed object directory and /Brepro make the output (GUIDs included)
# the same on every run with the same clang and lld.
tmp=obj
rm -rf "$tmp"
mkdir "$tmp"
trap 'rm -rf "$tmp"' EXIT
cflags="-g -gcodeview -O0 -ffreestanding -fno-stack-protector -fno-builtin -fdebug-compilation-dir=."

for f in kernel objects; do
	clang-14 --target=x86_64-pc-windows-msvc $cflags -c $f.c -o "$tmp/$f.obj"
	clang-14 --target=i686-pc-windows-msvc $cflags -c $f.c -o "$tmp/$f.32.obj"
done
clang-14 --target=x86_64-pc-windows-msvc $cflags -fno-exceptions -fno-rtti -c cxx.cpp -o "$tmp/cxx.obj"

lld-link-14 /nologo /brepro /debug /dll /noentry /nodefaultlib /machine:x64 \
	/out:"$tmp/kernel.dll" /pdb:../kernel.pdb /pdbaltpath:ntkrnlmp.pdb \
	"$tmp/kernel.obj" "$tmp/objects.obj" "$tmp/cxx.obj"
lld-link-14 /nologo /brepro /debug /dll /noentry /nodefaultlib /machine:x86 \
	/out:"$tmp/kernel32.dll" /pdb:../kernel32.pdb /pdbaltpath:ntkrpamp.pdb \
	"$tmp/kernel.32.obj" "$tmp/objects.32.obj"

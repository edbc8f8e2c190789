package releases

import (
	"bytes"
	"debug/pe"
	"encoding/binary"
	"unicode/utf16"
)

// This file crafts small but well-formed PE32+ images for the tests: the
// headers debug/pe needs, one section, and optionally a resource tree
// holding a VS_VERSIONINFO. It is exported (within the test binary) so
// that the end-to-end publish tests can upload such images.

// VersionStrings are the String entries of one StringTable.
type VersionStrings [][2]string

// VersionInfo encodes a VS_VERSIONINFO with one StringTable per element
// of tables (and a VarFileInfo, as resource compilers write).
func VersionInfo(tables ...VersionStrings) []byte {
	fixed := make([]byte, 52)
	binary.LittleEndian.PutUint32(fixed[0:], 0xFEEF04BD) // signature
	binary.LittleEndian.PutUint32(fixed[4:], 0x00010000) // struct version
	var stbs [][]byte
	for i, t := range tables {
		var strs [][]byte
		for _, kv := range t {
			v := utf16z(kv[1])
			strs = append(strs, vsBlock(kv[0], 1, v, uint16(len(v)/2)))
		}
		lang := []string{"040904B0", "041104B0", "000004B0"}[i%3]
		stbs = append(stbs, vsBlock(lang, 1, nil, 0, strs...))
	}
	sfi := vsBlock("StringFileInfo", 1, nil, 0, stbs...)
	vfi := vsBlock("VarFileInfo", 1, nil, 0, vsBlock("Translation", 0, []byte{0x09, 0x04, 0xB0, 0x04}, 4))
	return vsBlock("VS_VERSION_INFO", 0, fixed, uint16(len(fixed)), sfi, vfi)
}

func vsBlock(key string, typ uint16, value []byte, valueLen uint16, children ...[]byte) []byte {
	var b bytes.Buffer
	b.Write([]byte{0, 0}) // wLength, patched below
	_ = binary.Write(&b, binary.LittleEndian, valueLen)
	_ = binary.Write(&b, binary.LittleEndian, typ)
	b.Write(utf16z(key))
	pad4(&b)
	b.Write(value)
	for _, c := range children {
		pad4(&b)
		b.Write(c)
	}
	out := b.Bytes()
	binary.LittleEndian.PutUint16(out, uint16(len(out)))
	return out
}

func utf16z(s string) []byte {
	u := append(utf16.Encode([]rune(s)), 0)
	out := make([]byte, 2*len(u))
	for i, c := range u {
		binary.LittleEndian.PutUint16(out[2*i:], c)
	}
	return out
}

func pad4(b *bytes.Buffer) {
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
}

const (
	rsrcRVA   = 0x1000
	fileAlign = 0x200
)

// resourceSection lays out RT_VERSION → ID 1 → language 0x409 → data.
func resourceSection(vi []byte) []byte {
	b := make([]byte, 88, 88+len(vi))
	le := binary.LittleEndian
	dir := func(off, target uint32, id uint32) {
		le.PutUint16(b[off+14:], 1) // one ID entry
		le.PutUint32(b[off+16:], id)
		le.PutUint32(b[off+20:], target)
	}
	dir(0, 0x80000000|24, 16) // type RT_VERSION → subdirectory
	dir(24, 0x80000000|48, 1) // name 1 → subdirectory
	dir(48, 72, 0x409)        // language → data entry
	le.PutUint32(b[72:], rsrcRVA+88)
	le.PutUint32(b[76:], uint32(len(vi)))
	return append(b, vi...)
}

// BuildPE returns a PE32+ image; with vi == nil it has no resources.
func BuildPE(vi []byte) []byte {
	le := binary.LittleEndian
	section := []byte("no resources here")
	name := [8]byte{'.', 'd', 'a', 't', 'a'}
	if vi != nil {
		section = resourceSection(vi)
		name = [8]byte{'.', 'r', 's', 'r', 'c'}
	}
	var buf bytes.Buffer
	dos := make([]byte, 0x40)
	dos[0], dos[1] = 'M', 'Z'
	le.PutUint32(dos[0x3c:], 0x40)
	buf.Write(dos)
	buf.WriteString("PE\x00\x00")
	_ = binary.Write(&buf, le, pe.FileHeader{
		Machine: pe.IMAGE_FILE_MACHINE_AMD64, NumberOfSections: 1,
		SizeOfOptionalHeader: 240, Characteristics: 0x22,
	})
	oh := pe.OptionalHeader64{
		Magic: 0x20b, ImageBase: 0x140000000, SectionAlignment: 0x1000, FileAlignment: fileAlign,
		MajorOperatingSystemVersion: 6, MajorSubsystemVersion: 6,
		SizeOfImage: rsrcRVA + alignUp(uint32(len(section)), 0x1000), SizeOfHeaders: fileAlign,
		Subsystem: 3, NumberOfRvaAndSizes: 16,
	}
	if vi != nil {
		oh.DataDirectory[2] = pe.DataDirectory{VirtualAddress: rsrcRVA, Size: uint32(len(section))}
	}
	_ = binary.Write(&buf, le, oh)
	_ = binary.Write(&buf, le, pe.SectionHeader32{
		Name: name, VirtualSize: uint32(len(section)), VirtualAddress: rsrcRVA,
		SizeOfRawData: alignUp(uint32(len(section)), fileAlign), PointerToRawData: fileAlign,
		Characteristics: 0x40000040, // initialised data, readable
	})
	for buf.Len() < fileAlign {
		buf.WriteByte(0)
	}
	buf.Write(section)
	for buf.Len()%fileAlign != 0 {
		buf.WriteByte(0)
	}
	return buf.Bytes()
}

func alignUp(n, a uint32) uint32 { return (n + a - 1) / a * a }

package releases

import (
	"debug/pe"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf16"
)

// ErrNoVersionResource means the file is not a PE image or carries no
// VS_VERSIONINFO with a ProductVersion or FileVersion string.
var ErrNoVersionResource = errors.New("no version resource")

// Resource constants of the PE format.
const (
	imageDirectoryEntryResource = 2
	rtVersion                   = 16
	resourceSubdirFlag          = 0x80000000
	// maxVersionInfo bounds the resource we read; real ones are ~1 KiB.
	maxVersionInfo = 64 << 10
	// maxResourceEntries bounds one directory level of a crafted file.
	maxResourceEntries = 4096
)

// PEVersion reads the version an agent binary declares in its Windows
// version resource: the ProductVersion string, else the FileVersion
// string, of the first string table that has one (what Explorer's Details
// tab shows, and what upstream keys releases by). Trailing NULs and spaces
// that resource compilers leave are trimmed. The numeric VS_FIXEDFILEINFO
// is not used: it has four parts ("0.21.2.0") where releases are named by
// the string ("0.21.2"). A file that is not a PE image, or has no such
// string, yields ErrNoVersionResource; only an I/O error is anything else.
func PEVersion(r io.ReaderAt) (string, error) {
	f, err := pe.NewFile(r)
	if err != nil {
		return "", ErrNoVersionResource
	}
	defer f.Close()
	data, err := versionInfoData(f)
	if err != nil {
		return "", err
	}
	root, err := parseVersionBlock(data)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrNoVersionResource, err)
	}
	if root.key != "VS_VERSION_INFO" {
		return "", fmt.Errorf("%w: resource key %q is not VS_VERSION_INFO", ErrNoVersionResource, root.key)
	}
	for _, sfi := range root.children {
		if sfi.key != "StringFileInfo" {
			continue
		}
		for _, table := range sfi.children {
			for _, name := range []string{"ProductVersion", "FileVersion"} {
				for _, s := range table.children {
					if s.key == name {
						if v := strings.TrimRight(s.text, "\x00 \t\r\n"); v != "" {
							return strings.TrimSpace(v), nil
						}
					}
				}
			}
		}
	}
	return "", ErrNoVersionResource
}

// versionInfoData walks the resource tree (type RT_VERSION → first name →
// first language) to the VS_VERSIONINFO bytes.
func versionInfoData(f *pe.File) ([]byte, error) {
	var dir pe.DataDirectory
	switch oh := f.OptionalHeader.(type) {
	case *pe.OptionalHeader32:
		if oh.NumberOfRvaAndSizes > imageDirectoryEntryResource {
			dir = oh.DataDirectory[imageDirectoryEntryResource]
		}
	case *pe.OptionalHeader64:
		if oh.NumberOfRvaAndSizes > imageDirectoryEntryResource {
			dir = oh.DataDirectory[imageDirectoryEntryResource]
		}
	}
	if dir.VirtualAddress == 0 || dir.Size == 0 {
		return nil, ErrNoVersionResource
	}
	rsrc, err := readRVA(f, dir.VirtualAddress, dir.Size)
	if err != nil {
		return nil, err
	}
	off, isDir, err := findEntry(rsrc, 0, rtVersion)
	if err != nil || !isDir {
		return nil, ErrNoVersionResource
	}
	// Name, then language: take the first of each (an agent has one
	// version resource, usually ID 1, language 0x409 or neutral).
	off, isDir, err = findEntry(rsrc, off, -1)
	if err != nil || !isDir {
		return nil, ErrNoVersionResource
	}
	off, isDir, err = findEntry(rsrc, off, -1)
	if err != nil || isDir || int(off)+16 > len(rsrc) {
		return nil, ErrNoVersionResource
	}
	// IMAGE_RESOURCE_DATA_ENTRY: RVA, size, code page, reserved.
	rva := binary.LittleEndian.Uint32(rsrc[off:])
	size := binary.LittleEndian.Uint32(rsrc[off+4:])
	if size == 0 || size > maxVersionInfo {
		return nil, ErrNoVersionResource
	}
	return readRVA(f, rva, size)
}

// findEntry looks up id (or, with id < 0, the first entry) in the resource
// directory at off; it returns the entry's target offset and whether that
// is another directory.
func findEntry(rsrc []byte, off uint32, id int) (uint32, bool, error) {
	if int(off)+16 > len(rsrc) {
		return 0, false, errors.New("resource directory out of range")
	}
	named := int(binary.LittleEndian.Uint16(rsrc[off+12:]))
	ids := int(binary.LittleEndian.Uint16(rsrc[off+14:]))
	n := named + ids
	if n > maxResourceEntries {
		return 0, false, errors.New("too many resource entries")
	}
	for i := 0; i < n; i++ {
		e := int(off) + 16 + 8*i
		if e+8 > len(rsrc) {
			return 0, false, errors.New("resource entry out of range")
		}
		name := binary.LittleEndian.Uint32(rsrc[e:])
		target := binary.LittleEndian.Uint32(rsrc[e+4:])
		// Named entries (high bit set) never match a numeric type id.
		if id >= 0 && (name&resourceSubdirFlag != 0 || name != uint32(id)) {
			continue
		}
		return target &^ resourceSubdirFlag, target&resourceSubdirFlag != 0, nil
	}
	return 0, false, errors.New("resource entry not found")
}

// readRVA reads size bytes at a relative virtual address from the section
// that contains it.
func readRVA(f *pe.File, rva, size uint32) ([]byte, error) {
	for _, s := range f.Sections {
		span := max(s.VirtualSize, s.Size)
		if rva < s.VirtualAddress || rva-s.VirtualAddress >= span {
			continue
		}
		off := rva - s.VirtualAddress
		if uint64(off)+uint64(size) > uint64(s.Size) {
			return nil, fmt.Errorf("%w: resource data beyond its section", ErrNoVersionResource)
		}
		buf := make([]byte, size)
		if _, err := s.ReadAt(buf, int64(off)); err != nil {
			return nil, fmt.Errorf("read section %s: %w", s.Name, err)
		}
		return buf, nil
	}
	return nil, fmt.Errorf("%w: RVA %#x is in no section", ErrNoVersionResource, rva)
}

// versionBlock is one node of VS_VERSIONINFO: VS_VERSIONINFO itself,
// StringFileInfo, a StringTable, a String, VarFileInfo, Var.
type versionBlock struct {
	key      string
	text     string // value of a text block (wType 1)
	children []versionBlock
}

// parseVersionBlock decodes the block at the start of b (wLength,
// wValueLength, wType, szKey, padding, value, padding, children; every
// part 32-bit aligned).
func parseVersionBlock(b []byte) (versionBlock, error) {
	return parseBlockAt(b, 0, 0)
}

func parseBlockAt(b []byte, start, depth int) (versionBlock, error) {
	var blk versionBlock
	if depth > 4 {
		return blk, errors.New("version resource nested too deep")
	}
	if start+6 > len(b) {
		return blk, errors.New("version block header out of range")
	}
	length := int(binary.LittleEndian.Uint16(b[start:]))
	valueLen := int(binary.LittleEndian.Uint16(b[start+2:]))
	typ := binary.LittleEndian.Uint16(b[start+4:])
	end := start + length
	if length < 6 || end > len(b) {
		return blk, errors.New("version block length out of range")
	}
	key, p := readUTF16Z(b[:end], start+6)
	blk.key = key
	p = align4(p)
	if valueLen > 0 {
		if typ == 1 {
			// Text values: wValueLength counts characters, but compilers
			// disagree on whether that includes the NUL (some even write
			// bytes); reading up to the NUL within the block is what all
			// of them agree on.
			blk.text, p = readUTF16Z(b[:end], p)
		} else {
			p += valueLen
		}
		p = align4(p)
	}
	for p+6 <= end {
		child, err := parseBlockAt(b[:end], p, depth+1)
		if err != nil {
			return blk, err
		}
		blk.children = append(blk.children, child)
		clen := int(binary.LittleEndian.Uint16(b[p:]))
		p = align4(p + clen)
	}
	return blk, nil
}

// readUTF16Z reads a NUL-terminated UTF-16LE string at p and returns it
// and the offset after the NUL (or the end of b).
func readUTF16Z(b []byte, p int) (string, int) {
	var u []uint16
	for p+2 <= len(b) {
		c := binary.LittleEndian.Uint16(b[p:])
		p += 2
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u)), p
}

// align4 rounds an offset up to the next 32-bit boundary; the version
// data starts aligned, so offsets into it align the same way.
func align4(p int) int { return (p + 3) &^ 3 }

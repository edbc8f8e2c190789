package releases

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestPEVersion(t *testing.T) {
	cases := []struct {
		name string
		file []byte
		want string // "" = ErrNoVersionResource
	}{
		{"product version wins", BuildPE(VersionInfo(VersionStrings{
			{"CompanyName", "kanade"}, {"FileVersion", "0.21.2.0"}, {"ProductVersion", "0.21.2"},
		})), "0.21.2"},
		{"file version when no product version", BuildPE(VersionInfo(VersionStrings{
			{"FileDescription", "kanade agent"}, {"FileVersion", "1.4.0"},
		})), "1.4.0"},
		{"empty product version falls back", BuildPE(VersionInfo(VersionStrings{
			{"ProductVersion", ""}, {"FileVersion", "2.0.0"},
		})), "2.0.0"},
		{"trailing NUL and spaces trimmed", BuildPE(VersionInfo(VersionStrings{
			{"ProductVersion", "0.22.1\x00 "},
		})), "0.22.1"},
		{"second string table", BuildPE(VersionInfo(
			VersionStrings{{"Comments", "none"}},
			VersionStrings{{"ProductVersion", "3.1.4"}},
		)), "3.1.4"},
		{"version info without strings", BuildPE(VersionInfo()), ""},
		{"PE without resources", BuildPE(nil), ""},
		{"not a PE (ELF)", append([]byte("\x7fELF\x02\x01\x01"), make([]byte, 200)...), ""},
		{"empty", nil, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := PEVersion(bytes.NewReader(c.file))
			if c.want == "" {
				if !errors.Is(err, ErrNoVersionResource) {
					t.Fatalf("got %q, %v; want ErrNoVersionResource", got, err)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("got %q, %v; want %q", got, err, c.want)
			}
		})
	}
}

// TestPEVersionTestdata reads a PE made by a real resource compiler and
// linker (testdata/README.md), so the parser is not only checked against
// this package's own builder.
func TestPEVersionTestdata(t *testing.T) {
	path := filepath.Join("testdata", "agent-0.21.2.exe")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := PEVersion(bytes.NewReader(b)); err != nil || got != "0.21.2" {
		t.Fatalf("%s: %q %v", path, got, err)
	}
}

// TestPEVersionCorruptNeverPanics truncates and flips bytes of a valid
// image: an uploaded file is untrusted input.
func TestPEVersionCorruptNeverPanics(t *testing.T) {
	good := BuildPE(VersionInfo(VersionStrings{{"ProductVersion", "0.21.2"}}))
	for n := 0; n < len(good); n += 7 {
		_, _ = PEVersion(bytes.NewReader(good[:n]))
	}
	for i := 0x200; i < len(good); i++ {
		bad := bytes.Clone(good)
		bad[i] ^= 0xff
		_, _ = PEVersion(bytes.NewReader(bad))
	}
}

func FuzzPEVersion(f *testing.F) {
	f.Add(BuildPE(VersionInfo(VersionStrings{{"ProductVersion", "0.21.2"}})))
	f.Add(BuildPE(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = PEVersion(bytes.NewReader(b))
	})
}

// Package headroom watches the free space of the filesystems that hold the
// backend's data: the SQLite database and the embedded JetStream store. A
// full disk does not lose data (the projectors retry, the broker refuses
// what it cannot store), but everything stops moving; the point here is to
// say so early, in fleet health and in metrics, while there is still room
// to act.
//
// Space is measured when asked (statfs costs microseconds), so fleet
// health and a Prometheus scrape always see the current figure and nothing
// runs in the background.
package headroom

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of Config: a filesystem is low on space below either threshold.
const (
	DefaultMinFreePercent = 5
	DefaultMinFreeBytes   = 1 << 30
)

// Place is one directory whose filesystem is watched.
type Place struct {
	// Name says what lives there ("database", "jetstream store").
	Name string
	Dir  string
}

// Config says what to watch and when space counts as low.
type Config struct {
	Places []Place
	// MinFreePercent and MinFreeBytes: a filesystem is low when its free
	// space (available to this process) is below either. 0 takes the
	// default; a negative value disables that threshold.
	MinFreePercent float64
	MinFreeBytes   int64
}

// Watcher measures the watched filesystems.
type Watcher struct {
	cfg Config
}

// New returns a watcher for cfg.
func New(cfg Config) *Watcher {
	if cfg.MinFreePercent == 0 {
		cfg.MinFreePercent = DefaultMinFreePercent
	}
	if cfg.MinFreeBytes == 0 {
		cfg.MinFreeBytes = DefaultMinFreeBytes
	}
	return &Watcher{cfg: cfg}
}

// Usage is one filesystem's space.
type Usage struct {
	// Dir is the first watched directory on this filesystem; Names lists
	// what lives on it.
	Dir   string
	Names []string
	Free  uint64 // bytes available to this process
	Size  uint64 // bytes in total
	// Low says free space is below a threshold; Reason explains it.
	Low    bool
	Reason string
	// Err is set when the filesystem could not be measured.
	Err error
}

// Measure returns the usage of every watched filesystem, one entry per
// filesystem (places that share one are merged), in the order of
// Config.Places.
func (w *Watcher) Measure() []Usage {
	var out []Usage
	byDev := map[uint64]int{}
	for _, p := range w.cfg.Places {
		dir := existingParent(p.Dir)
		fs, err := statFS(dir)
		if errors.Is(err, errUnsupported) {
			continue
		}
		if err != nil {
			out = append(out, Usage{Dir: p.Dir, Names: []string{p.Name}, Err: fmt.Errorf("statfs %s: %w", dir, err)})
			continue
		}
		if i, ok := byDev[fs.dev]; ok {
			out[i].Names = append(out[i].Names, p.Name)
			continue
		}
		u := Usage{Dir: p.Dir, Names: []string{p.Name}, Free: fs.free, Size: fs.size}
		w.judge(&u)
		byDev[fs.dev] = len(out)
		out = append(out, u)
	}
	return out
}

// Low returns the filesystems that are low on space (or that could not be
// measured).
func (w *Watcher) Low() []Usage {
	var low []Usage
	for _, u := range w.Measure() {
		if u.Low || u.Err != nil {
			low = append(low, u)
		}
	}
	return low
}

func (w *Watcher) judge(u *Usage) {
	pct := 100.0
	if u.Size > 0 {
		pct = 100 * float64(u.Free) / float64(u.Size)
	}
	var below []string
	if w.cfg.MinFreePercent > 0 && pct < w.cfg.MinFreePercent {
		below = append(below, fmt.Sprintf("%g %%", w.cfg.MinFreePercent))
	}
	if w.cfg.MinFreeBytes > 0 && u.Free < uint64(w.cfg.MinFreeBytes) {
		below = append(below, bytes(uint64(w.cfg.MinFreeBytes)))
	}
	if len(below) == 0 {
		return
	}
	u.Low = true
	u.Reason = fmt.Sprintf("low disk space: %s free of %s (%.1f %%), below %s", bytes(u.Free), bytes(u.Size), pct,
		strings.Join(below, " / "))
}

// existingParent returns dir or its nearest existing ancestor: the
// database's directory may not exist yet on first start.
func existingParent(dir string) string {
	for {
		if _, err := os.Stat(dir); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return dir
		}
		dir = parent
	}
}

// filesystem is what statFS measures.
type filesystem struct {
	free, size uint64 // bytes available to this process, bytes in total
	dev        uint64 // identifies the filesystem, to merge places on one
}

// errUnsupported: free space is not measured on this platform (the
// backend's fault handling works the same, only without the warning).
var errUnsupported = errors.New("free space not measured on this platform")

// bytes formats n in binary units ("1.5 GiB").
func bytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// Collector exports the watched filesystems as kanade_disk_free_bytes,
// kanade_disk_size_bytes and kanade_disk_low (label dir), measured at each
// scrape.
func (w *Watcher) Collector() prometheus.Collector { return collector{w} }

var (
	descFree = prometheus.NewDesc("kanade_disk_free_bytes",
		"Free bytes (available to the backend) of the filesystem holding the database and/or the JetStream store.", []string{"dir", "holds"}, nil)
	descSize = prometheus.NewDesc("kanade_disk_size_bytes",
		"Size in bytes of the filesystem holding the database and/or the JetStream store.", []string{"dir", "holds"}, nil)
	descLow = prometheus.NewDesc("kanade_disk_low",
		"1 while the filesystem's free space is below the configured threshold (fleet health is degraded), else 0.", []string{"dir", "holds"}, nil)
)

type collector struct{ w *Watcher }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descFree
	ch <- descSize
	ch <- descLow
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	for _, u := range c.w.Measure() {
		if u.Err != nil {
			continue
		}
		names := append([]string(nil), u.Names...)
		sort.Strings(names)
		holds := strings.Join(names, ",")
		low := 0.0
		if u.Low {
			low = 1
		}
		ch <- prometheus.MustNewConstMetric(descFree, prometheus.GaugeValue, float64(u.Free), u.Dir, holds)
		ch <- prometheus.MustNewConstMetric(descSize, prometheus.GaugeValue, float64(u.Size), u.Dir, holds)
		ch <- prometheus.MustNewConstMetric(descLow, prometheus.GaugeValue, low, u.Dir, holds)
	}
}

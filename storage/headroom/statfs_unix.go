//go:build unix

package headroom

import "syscall"

func statFS(dir string) (filesystem, error) {
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		return filesystem{}, err
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return filesystem{}, err
	}
	return filesystem{
		free: uint64(fs.Bavail) * uint64(fs.Bsize),
		size: uint64(fs.Blocks) * uint64(fs.Bsize),
		dev:  uint64(st.Dev),
	}, nil
}

//go:build !unix

package headroom

func statFS(string) (filesystem, error) { return filesystem{}, errUnsupported }

//go:build !linux

package pgmig

import "io/fs"

// fileReader reads the files of one directory; see the Linux version.
type fileReader struct{ dirFS }

func newFileReader(d *dirFS) *fileReader { return &fileReader{dirFS: *d} }

func (r *fileReader) read(name string, _ []byte) ([]byte, error) { return fs.ReadFile(r.FS, name) }

func (r *fileReader) close() {}

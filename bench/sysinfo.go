package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgmig/pgmig/tests/pgtest"
)

// clockTick is the unit of the CPU times in /proc (USER_HZ, 100 on every
// Linux architecture Go supports).
const clockTick = 10 * time.Millisecond

func numCPU() int { return runtime.NumCPU() }

// loadavg is /proc/loadavg's three load averages ("" elsewhere).
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// procStat is the fields of /proc/<pid>/stat after the command name,
// numbered as in proc(5) from 3 (state) on.
func procStat(pid int) (ppid int, utime, stime, cutime, cstime int64, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, 0, 0, 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, 0, 0, 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 15 {
		return 0, 0, 0, 0, 0, false
	}
	n := func(k int) int64 { v, _ := strconv.ParseInt(f[k-3], 10, 64); return v }
	return int(n(4)), n(14), n(15), n(16), n(17), true
}

// postmasterPID is the parent of the admin connection's backend.
func postmasterPID(ctx context.Context, admin *pgx.Conn) (int, error) {
	var pid int
	if err := admin.QueryRow(ctx, "select pg_backend_pid()").Scan(&pid); err != nil {
		return 0, err
	}
	ppid, _, _, _, _, ok := procStat(pid)
	if !ok {
		return 0, fmt.Errorf("reading /proc/%d/stat: the benchmark needs Linux's /proc", pid)
	}
	return ppid, nil
}

// serverCPU is the CPU time the server has used: the postmaster's own and
// that of every child it has reaped (exited backends), plus that of its
// live children (the auxiliary processes, backends still running).
func serverCPU(pm int) time.Duration {
	_, u, s, cu, cs, ok := procStat(pm)
	if !ok {
		return 0
	}
	ticks := u + s + cu + cs
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, u, s, _, _, ok := procStat(pid); ok && ppid == pm {
			ticks += u + s
		}
	}
	return time.Duration(ticks) * clockTick
}

// machineCPU is the busy time of all CPUs (/proc/stat: everything but idle
// and iowait), whoever used them.
func machineCPU() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for i, v := range f[1:] {
		// user nice system idle iowait irq softirq steal guest guest_nice;
		// guest time is already counted in user.
		if i == 3 || i == 4 || i >= 8 {
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		busy += n
	}
	return time.Duration(busy) * clockTick
}

// ternVersion is the version of tern the benchmark is linked with (go.mod).
func ternVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/jackc/tern/v2" {
				if d.Replace != nil {
					d = d.Replace
				}
				if d.Version != "" && d.Version != "(devel)" {
					return d.Version
				}
			}
		}
	}
	return "v2.3.4"
}

func cacheDir() (string, error) { return pgtest.CacheDir() }

package main

import (
	"encoding/json"
	"os"
	"strings"
	"time"
)

// fleetJSON is a fleet run's measurements as saved next to its plot
// (bench/fleet.json), so that the section can be rendered again from them
// (-fleet-render) after a change to the report, without running for half
// an hour.
type fleetJSON struct {
	Finished   time.Time                  `json:"finished"`
	Command    string                     `json:"command"`
	PGVersion  string                     `json:"pg_version"`
	Machine    string                     `json:"machine"`
	Cores      int                        `json:"cores"`
	DBs        int                        `json:"dbs"`
	N          int                        `json:"migrations"`
	Runs       int                        `json:"runs"`
	Parallels  []int                      `json:"parallels"`
	Order      []string                   `json:"order"`
	Samples    map[string][]fleetSampleJS `json:"samples"`
	Failures   map[string][]string        `json:"failures,omitempty"`
	Commands   map[string]string          `json:"commands"`
	RoundTrip  time.Duration              `json:"round_trip_ns"`
	CommitTrip time.Duration              `json:"commit_round_trip_ns"`
	Create     time.Duration              `json:"create_db_ns"`
	Drop       time.Duration              `json:"drop_db_ns"`
	Strategy   string                     `json:"create_strategy"`
	LoadBefore string                     `json:"loadavg_before"`
	LoadAfter  string                     `json:"loadavg_after"`
	Elapsed    time.Duration              `json:"elapsed_ns"`
}

type fleetSampleJS struct {
	Wall     time.Duration `json:"wall_ns"`
	Client   time.Duration `json:"client_cpu_ns"`
	Server   time.Duration `json:"server_cpu_ns"`
	Machine  time.Duration `json:"machine_cpu_ns"`
	WALSyncs int64         `json:"wal_syncs"`
}

func (f *fleetResult) save(path string, rep *report) error {
	j := fleetJSON{Finished: time.Now().UTC(), Command: rep.commandLine(), PGVersion: rep.pgVersion, Machine: rep.machine,
		Cores: f.cores, DBs: f.cfg.dbs, N: f.cfg.n, Runs: f.cfg.runs, Parallels: f.cfg.parallels, Order: f.order,
		Samples: map[string][]fleetSampleJS{}, Failures: f.failures, Commands: f.commands,
		RoundTrip: f.roundTrip, CommitTrip: f.commitTrip, Create: f.create, Drop: f.drop, Strategy: f.strategy,
		LoadBefore: f.loadBefore, LoadAfter: f.loadAfter, Elapsed: f.elapsed}
	for c, ss := range f.samples {
		for _, s := range ss {
			j.Samples[c] = append(j.Samples[c], fleetSampleJS{s.wall, s.client, s.server, s.machine, s.walSyncs})
		}
	}
	b, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// loadFleet reads a saved run; rep gets what the section shows of the
// server and the machine.
func loadFleet(path string, rep *report) (*fleetResult, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var j fleetJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, err
	}
	rep.pgVersion, rep.machine, rep.command, rep.finished = j.PGVersion, j.Machine, j.Command, j.Finished
	f := &fleetResult{cfg: fleetConfig{dbs: j.DBs, n: j.N, runs: j.Runs, parallels: j.Parallels},
		order: j.Order, samples: map[string][]fleetSample{}, failures: j.Failures, commands: j.Commands,
		roundTrip: j.RoundTrip, commitTrip: j.CommitTrip, create: j.Create, drop: j.Drop, strategy: j.Strategy,
		loadBefore: j.LoadBefore, loadAfter: j.LoadAfter, elapsed: j.Elapsed, cores: j.Cores}
	if f.failures == nil {
		f.failures = map[string][]string{}
	}
	for c, ss := range j.Samples {
		for _, s := range ss {
			f.samples[c] = append(f.samples[c], fleetSample{s.Wall, s.Client, s.Server, s.Machine, s.WALSyncs})
		}
	}
	return f, nil
}

// jsonPath is where the measurements of the plot at png are saved.
func jsonPath(png string) string { return strings.TrimSuffix(png, ".png") + ".json" }

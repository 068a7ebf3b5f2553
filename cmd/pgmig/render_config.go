package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/jackc/pgx/v5/pgconn"
	pgmig "github.com/pgmig/pgmig/gowrapper"
)

// configResult is `pgmig config`: every setting, its effective value
// (secrets masked) and where it came from.
type configResult struct {
	File       string          `json:"config_file,omitempty"`
	FileSource string          `json:"config_file_source,omitempty"`
	Settings   []configSetting `json:"settings"`
	Data       []configSetting `json:"data"`
	// Connection is what the connection string resolves to once libpq's
	// rules (PG* variables, ~/.pgpass, defaults) fill it in.
	Connection      *connectionSummary `json:"connection,omitempty"`
	ConnectionError string             `json:"connection_error,omitempty"`
}

type configSetting struct {
	Name   string `json:"name"`
	Value  string `json:"value"`
	Source string `json:"source"`
}

type connectionSummary struct {
	Host            string `json:"host"`
	Port            uint16 `json:"port"`
	User            string `json:"user"`
	Database        string `json:"database"`
	Password        bool   `json:"password_set"`
	ApplicationName string `json:"application_name,omitempty"`
}

func newConfigResult(inv *invocation) configResult {
	o := inv.opts
	r := configResult{Settings: []configSetting{}, Data: []configSetting{}}
	if inv.cfg != nil {
		r.File, r.FileSource = inv.cfg.path, inv.cfg.why
	}
	add := func(d *flagDef, value string) {
		r.Settings = append(r.Settings, configSetting{Name: d.name, Value: value, Source: o.sources[d.name]})
	}
	db := maskSecrets(o.database)
	if db == "" {
		db = "(none: libpq's PG* variables and defaults)"
	}
	add(flagDatabase, db)
	schema := o.schema
	if schema == "" {
		schema = "(none: the database's own migrations)"
	}
	add(flagSchema, schema)
	add(flagAPISchema, o.apiSchema)
	add(flagDir, o.dir)
	format := o.format
	if format == "" {
		format = "tern"
	}
	add(flagFormat, format)
	lockTimeout := o.lockTimeout.String()
	if o.lockTimeout == 0 && o.sources[flagLockTimeout.name] == "default" {
		lockTimeout = "(per command: push, baseline and repair wait as the server's lock_timeout says; validate 1s; rollback and resolve do not wait)"
	}
	add(flagLockTimeout, lockTimeout)
	segment := fmt.Sprint(o.segmentSize)
	switch o.segmentSize {
	case 0:
		segment = "auto"
	case pgmig.SegmentAll:
		segment = "all"
	}
	add(flagSegmentSize, segment)
	add(flagAllowOutOfOrder, fmt.Sprint(o.allowOutOfOrder))
	add(flagAllowMissing, fmt.Sprint(o.allowMissing))
	add(flagTernTable, o.ternTable)
	waitTimeout := o.waitTimeout.String()
	if o.waitTimeout == 0 {
		waitTimeout = "none"
	}
	add(flagWaitTimeout, waitTimeout)
	ddl := o.ddlLockTimeout.String()
	if o.ddlLockTimeout == 0 {
		ddl = "none (plan --rehearse: 1s)"
	}
	add(flagDDLLockTimeout, ddl)
	add(flagRetries, fmt.Sprint(o.retries))
	add(flagRetryMaxWait, o.retryMaxWait.String())
	stmt := o.statementTimeout.String()
	if o.statementTimeout == 0 {
		stmt = "none"
	}
	add(flagStatementTimeout, stmt)
	failOn := strings.Join(o.failOn, ",")
	if failOn == "" {
		failOn = "nothing"
	}
	add(flagFailOn, failOn)
	for _, k := range o.dataKeys() {
		v := o.data[k]
		if secretKey(k) {
			v = "*****"
		}
		r.Data = append(r.Data, configSetting{Name: k, Value: v, Source: o.dataSources[k]})
	}
	// Parsing reads no network: it shows what the connection string,
	// completed by libpq's environment, says.
	if cc, err := pgconn.ParseConfig(o.database); err != nil {
		r.ConnectionError = maskSecrets(err.Error())
	} else {
		r.Connection = &connectionSummary{Host: cc.Host, Port: cc.Port, User: cc.User, Database: cc.Database,
			Password: cc.Password != "", ApplicationName: cc.RuntimeParams["application_name"]}
	}
	return r
}

func (r configResult) jsonValue() any { return r }

func (r configResult) text(o *output) {
	if r.File != "" {
		fmt.Fprintf(o.stdout, "Config file: %s (%s)\n", r.File, r.FileSource)
	} else {
		fmt.Fprintf(o.stdout, "Config file: none (no --config, no PGMIG_CONFIG, no ./%s or ./%s)\n", configName, ternConfigName)
	}
	tw := tabwriter.NewWriter(o.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SETTING\tVALUE\tFROM")
	for _, s := range r.Settings {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", s.Name, s.Value, s.Source)
	}
	for _, s := range r.Data {
		fmt.Fprintf(tw, "data %s\t%s\t%s\n", s.Name, s.Value, s.Source)
	}
	tw.Flush()
	if r.ConnectionError != "" {
		fmt.Fprintf(o.stdout, "The connection string does not parse: %s\n", r.ConnectionError)
		return
	}
	c := r.Connection
	pw := "no password"
	if c.Password {
		pw = "a password"
	}
	var extra []string
	if c.ApplicationName != "" {
		extra = append(extra, "application_name "+c.ApplicationName)
	}
	fmt.Fprintf(o.stdout, "Connects to %s:%d as %s, database %s, with %s%s (libpq's PG* variables, ~/.pgpass and defaults fill what the string leaves out).\n",
		c.Host, c.Port, c.User, c.Database, pw, strings.Join(append([]string{""}, extra...), ", "))
}

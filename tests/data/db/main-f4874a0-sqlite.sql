-- The schema callstream's main (f4874a0, before Alembic) creates on SQLite (create_all).
CREATE TABLE analysis_results (
	idempotency_key VARCHAR(200) NOT NULL, 
	tenant VARCHAR(64) NOT NULL, 
	case_id VARCHAR(32) NOT NULL, 
	case_version INTEGER NOT NULL, 
	result_version INTEGER NOT NULL, 
	profile_id VARCHAR(64) NOT NULL, 
	profile_version INTEGER NOT NULL, 
	overall_score FLOAT NOT NULL, 
	passed BOOLEAN NOT NULL, 
	result BLOB NOT NULL, 
	analysed_at DATETIME NOT NULL, 
	PRIMARY KEY (idempotency_key)
);

CREATE INDEX ix_analysis_results_case ON analysis_results (case_id, result_version);

CREATE TABLE applied_deliveries (
	delivery_key VARCHAR(200) NOT NULL, 
	tenant VARCHAR(64) NOT NULL, 
	case_id VARCHAR(32) NOT NULL, 
	applied_at DATETIME NOT NULL, 
	PRIMARY KEY (delivery_key)
);

CREATE TABLE bundle_locks (
	tenant VARCHAR(64) NOT NULL, 
	source_system VARCHAR(128) NOT NULL, 
	touched_at DATETIME NOT NULL, 
	PRIMARY KEY (tenant, source_system)
);

CREATE TABLE cases (
	case_id VARCHAR(32) NOT NULL, 
	tenant VARCHAR(64) NOT NULL, 
	source_system VARCHAR(128) NOT NULL, 
	external_interaction_id VARCHAR(512) NOT NULL, 
	version INTEGER NOT NULL, 
	content_hash VARCHAR(64) NOT NULL, 
	channel VARCHAR(16) NOT NULL, 
	conversation TEXT NOT NULL, 
	source TEXT, 
	opened_at DATETIME NOT NULL, 
	updated_at DATETIME NOT NULL, 
	PRIMARY KEY (case_id)
);

CREATE INDEX ix_cases_tenant ON cases (tenant);

CREATE TABLE connector_files (
	tenant VARCHAR(64) NOT NULL, 
	connector VARCHAR(64) NOT NULL, 
	path VARCHAR(1024) NOT NULL, 
	version_id VARCHAR(64) NOT NULL, 
	version INTEGER NOT NULL, 
	size BIGINT NOT NULL, 
	mtime FLOAT NOT NULL, 
	checksum VARCHAR(128), 
	file_id VARCHAR(64) NOT NULL, 
	announced_at DATETIME NOT NULL, 
	outcome VARCHAR(16), 
	decided_at DATETIME, 
	cleanup_stage VARCHAR(16), 
	cleanup_action VARCHAR(32), 
	cleaned_at DATETIME, 
	moved_to TEXT, 
	PRIMARY KEY (tenant, connector, path)
);

CREATE TABLE file_outcomes (
	file_id VARCHAR(32) NOT NULL, 
	tenant VARCHAR(64) NOT NULL, 
	connector VARCHAR(64) NOT NULL, 
	path VARCHAR(1024) NOT NULL, 
	version_id VARCHAR(64) NOT NULL, 
	outcome VARCHAR(16) NOT NULL, 
	rows_accepted BIGINT NOT NULL, 
	rows_rejected BIGINT NOT NULL, 
	reason VARCHAR(64), 
	decided_at DATETIME NOT NULL, 
	rejected_by_reason TEXT, 
	rows_done BIGINT, 
	lines_read BIGINT, 
	PRIMARY KEY (file_id)
);

CREATE INDEX ix_file_outcomes_tenant ON file_outcomes (tenant);

CREATE TABLE outbox (
	id INTEGER NOT NULL, 
	topic VARCHAR(255) NOT NULL, 
	"key" BLOB NOT NULL, 
	value BLOB NOT NULL, 
	created_at DATETIME NOT NULL, 
	published_at DATETIME, 
	announced_at DATETIME, 
	PRIMARY KEY (id)
);

CREATE INDEX ix_outbox_published_at ON outbox (published_at);

CREATE TABLE pending_metadata (
	tenant VARCHAR(64) NOT NULL, 
	connector VARCHAR(64) NOT NULL, 
	path VARCHAR(1024) NOT NULL, 
	source_system VARCHAR(128) NOT NULL, 
	file_id VARCHAR(32) NOT NULL, 
	fields TEXT NOT NULL, 
	call_time DATETIME, 
	announced_at DATETIME NOT NULL, 
	arrived_at DATETIME NOT NULL, 
	reported_at DATETIME, 
	PRIMARY KEY (tenant, connector, path)
);

CREATE INDEX ix_pending_metadata_source ON pending_metadata (tenant, source_system);

CREATE TABLE recording_bundles (
	tenant VARCHAR(64) NOT NULL, 
	source_system VARCHAR(128) NOT NULL, 
	call_key VARCHAR(512) NOT NULL, 
	mode VARCHAR(16) NOT NULL, 
	rec_file_id VARCHAR(32), 
	rec_connector VARCHAR(64), 
	rec_path VARCHAR(1024), 
	rec_ref TEXT, 
	rec_sha256 VARCHAR(64), 
	rec_size BIGINT, 
	rec_duration FLOAT, 
	rec_fields TEXT, 
	rec_call_time DATETIME, 
	rec_announced_at DATETIME, 
	rec_arrived_at DATETIME, 
	meta_file_id VARCHAR(32), 
	meta_connector VARCHAR(64), 
	meta_path VARCHAR(1024), 
	meta_fields TEXT, 
	meta_call_time DATETIME, 
	meta_versions INTEGER, 
	meta_announced_at DATETIME, 
	meta_first_at DATETIME, 
	meta_arrived_at DATETIME, 
	match_fields VARCHAR(64), 
	missing_reported_at DATETIME, 
	PRIMARY KEY (tenant, source_system, call_key)
);

CREATE INDEX ix_recording_bundles_meta_path ON recording_bundles (tenant, meta_connector, meta_path);

CREATE INDEX ix_recording_bundles_waiting ON recording_bundles (tenant, rec_connector, missing_reported_at);

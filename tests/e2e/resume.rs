//! Resuming: starting from the position after each of N commits gives
//! exactly the row changes after it, by file position and by GTID.

use rowhook::decode::{ChangeVisitor, Commit, Decoder, DecoderOptions, Flow, RowChange};
use rowhook::source::file::{BinlogFile, Next};

use crate::support::{Server, json_lines, rowhook_ok};

#[derive(Default)]
struct Record {
    ids: Vec<String>,
    /// (changes before it, file, end, gtid state)
    commits: Vec<(usize, String, u64, String)>,
}

impl ChangeVisitor for Record {
    fn change(&mut self, change: &RowChange<'_>) -> Flow {
        self.ids.push(change.id());
        Flow::Continue
    }
    fn commit(&mut self, commit: &Commit<'_>) -> Flow {
        self.commits.push((
            self.ids.len(),
            commit.file.to_string(),
            commit.end,
            commit.gtid_state.to_string(),
        ));
        Flow::Continue
    }
}

#[test]
fn resume_after_each_commit_gives_exactly_the_rest() {
    let server = Server::start(&[]);
    let mut sql = String::from("CREATE DATABASE r; CREATE TABLE r.t (id INT PRIMARY KEY, v INT);\n");
    for i in 0..30 {
        // Transactions of 1..=3 rows, and a DDL every tenth.
        sql.push_str("BEGIN;\n");
        for k in 0..(i % 3 + 1) {
            sql.push_str(&format!("INSERT INTO r.t (id, v) VALUES ({}, {i});\n", i * 10 + k));
        }
        sql.push_str("COMMIT;\n");
        if i % 10 == 9 {
            sql.push_str(&format!("ALTER TABLE r.t ADD COLUMN c{i} INT;\n"));
        }
        if i == 15 {
            sql.push_str("FLUSH BINARY LOGS;\n");
        }
    }
    server.sql(&sql);
    // A sentinel after everything: a reader that gets it got no more than the rest.
    server.sql("INSERT INTO r.t (id, v) VALUES (-1, -1); FLUSH BINARY LOGS;");

    let files = ["mysql-bin.000001", "mysql-bin.000002"];
    let mut decoder = Decoder::new(DecoderOptions::default(), files[0]);
    let mut rec = Record::default();
    for f in files {
        let mut file = BinlogFile::open(&server.binlog(f)).unwrap();
        decoder.set_file(file.name());
        while let Next::Event(ev) = file.next_event().unwrap() {
            decoder.feed(ev, &mut rec).unwrap();
        }
    }
    let total = rec.ids.len();
    assert_eq!(total, (0..30).map(|i| i % 3 + 1).sum::<usize>() + 1);
    assert!(rec.commits.len() > 30);

    for (done, file, end, gtids) in rec.commits.iter().step_by(3) {
        let rest = &rec.ids[*done..];
        let limit = rest.len().to_string();
        for start in [format!("{file}:{end}"), gtids.clone()] {
            let out = rowhook_ok(&[
                "inspect",
                "--url",
                &server.url(),
                "--start",
                &start,
                "--limit",
                &limit,
                "--server-id",
                "902",
            ]);
            let got: Vec<String> = json_lines(&out)
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(got, rest, "resuming from {start}");
        }
        // The same from the files.
        let paths: Vec<String> = files
            .iter()
            .map(|f| server.binlog(f).to_str().unwrap().to_string())
            .collect();
        let mut args = vec!["inspect", "--start"];
        let start = format!("{file}:{end}");
        args.push(&start);
        args.push("--file");
        args.extend(paths.iter().map(String::as_str));
        let out = rowhook_ok(&args);
        let got: Vec<String> = json_lines(&out)
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(got, rest, "resuming the files from {start}");
    }
}

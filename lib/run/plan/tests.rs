use super::*;

const PLAN: &str = r#"
    duration = "2s"
    grace = "500ms"
    ssh_args = ["-F", "cfg"]

    [[host]]
    address = "a"
    [[host.process]]
    name = "replica"
    count = 2
    command = "replica --id {i} --port {port} --on {host}"
    vars = { port = "70{i}" }
    fetch = ["/tmp/r-{i}.log"]
    [[host.process]]
    name = "load"
    command = "load --target {host} --n {n}"

    [[host]]
    address = "b"
    ssh_args = ["-p", "2222"]
    [[host.process]]
    name = "replica"
    count = 2
    command = "replica --id {i} --port {port} --on {host}"
    vars = { port = "70{i}" }
"#;

#[test]
fn expands_indices_hosts_and_vars() {
    let plan = parse(PLAN).unwrap().points.remove(0).plan;
    assert_eq!(plan.duration, Some(Duration::from_secs(2)));
    assert_eq!(plan.grace, Duration::from_millis(500));
    assert!(plan.stop_on_failure);
    assert_eq!(plan.hosts[1].ssh_args, ["-F", "cfg", "-p", "2222"]);
    let commands: Vec<(usize, String, String)> = plan
        .procs
        .iter()
        .map(|p| (p.host, p.label(), p.command.clone()))
        .collect();
    assert_eq!(
        commands,
        [
            (
                0,
                "replica[0]".into(),
                "replica --id 0 --port 700 --on a".into()
            ),
            (
                0,
                "replica[1]".into(),
                "replica --id 1 --port 701 --on a".into()
            ),
            (0, "load[0]".into(), "load --target a --n 0".into()),
            (
                1,
                "replica[2]".into(),
                "replica --id 2 --port 702 --on b".into()
            ),
            (
                1,
                "replica[3]".into(),
                "replica --id 3 --port 703 --on b".into()
            ),
        ]
    );
    assert_eq!(plan.procs[1].fetch, ["/tmp/r-1.log"]);
}

#[test]
fn templates() {
    let values = HashMap::from([("i".to_string(), "3".to_string())]);
    assert_eq!(expand("x{i}y", &values).unwrap(), "x3y");
    assert_eq!(
        expand("awk '{{print $1}}' {i}", &values).unwrap(),
        "awk '{print $1}' 3"
    );
    assert!(
        expand("{nope}", &values)
            .unwrap_err()
            .contains("unknown {nope}")
    );
    assert!(expand("a } b", &values).is_err());
}

#[test]
fn mistakes_are_reported() {
    assert!(parse("").unwrap_err().contains("starts no process"));
    assert!(
        parse("on_failure = \"maybe\"\n")
            .unwrap_err()
            .contains("on_failure")
    );
    assert!(
        parse("[[host]]\naddress = \"a\"\n[[host.process]]\nname = \"x\"\ncommand = \"{who}\"\n")
            .unwrap_err()
            .contains("unknown {who}")
    );
    assert!(parse("duration = \"soon\"\n[[host]]\naddress = \"a\"\n").is_err());
}

#[test]
fn the_short_form() {
    let plan = short(&Short {
        hosts: vec!["h1".into(), "h2".into()],
        count: 2,
        command: "work -i {i}".into(),
        ssh_args: vec!["-F".into(), "c".into()],
        via: vec!["gw".into()],
        via_mode: Some("ssh".into()),
        ..Short::default()
    })
    .unwrap()
    .points
    .remove(0)
    .plan;
    let commands: Vec<&str> = plan.procs.iter().map(|p| p.command.as_str()).collect();
    assert_eq!(
        commands,
        ["work -i 0", "work -i 1", "work -i 2", "work -i 3"]
    );
    assert_eq!(plan.hosts[1].address, "h2");
    assert_eq!(plan.hosts[0].ssh_args, ["-F", "c"]);
    assert_eq!(plan.hosts[0].via, ["gw"]);
    assert_eq!(plan.hosts[0].via_mode, ViaMode::Ssh);
}

#[test]
fn hosts_go_through_the_plans_gateway_unless_they_name_their_own() {
    let e = parse(
        r#"
        via = "gw1"
        via_mode = "ssh"
        on_unreachable = "stop"
        [[host]]
        address = "a"
        [[host.process]]
        name = "x"
        command = "c"
        [[host]]
        address = "b"
        via = ["bastion", "gw2"]
        via_mode = "tcp"
        [[host.process]]
        name = "x"
        command = "c"
        "#,
    )
    .unwrap();
    let plan = &e.points[0].plan;
    assert!(plan.stop_on_unreachable);
    assert_eq!(plan.hosts[0].via, ["gw1"]);
    assert_eq!(plan.hosts[0].via_mode, ViaMode::Ssh);
    assert_eq!(plan.hosts[1].via, ["bastion", "gw2"]);
    assert_eq!(plan.hosts[1].via_mode, ViaMode::Tcp);
    let err = parse("via = 3\n[[host]]\naddress = \"a\"\n").unwrap_err();
    assert!(err.contains("via = 3"), "{err}");
    let err = parse("on_unreachable = \"skip\"\n[[host]]\naddress = \"a\"\n").unwrap_err();
    assert!(err.contains("continue"), "{err}");
}

const SWEPT: &str = r#"
    duration = "{secs}s"
    results = "out"
    setup = "mkdir -p /tmp/x/{point}/{host}"
    [sweep]
    per_host = [1, 2]
    secs = [3]

    [[host]]
    address = "a"
    [[host.process]]
    name = "replica"
    command = "replica --port {port}"
    vars = { port = "70{i}" }
    ready = { port = "{port}" }
    ready_timeout = "5s"
    [[host.process]]
    name = "client"
    count = "{per_host}"
    after = "replica"
    command = "client {i} of {per_host}"
    env = { ID = "{i}", POINT = "{point}", N = 3 }
    cwd = "/tmp/x/{point}"
    fetch = ["/tmp/x/{point}/client-{i}.txt"]
    [[host.process]]
    name = "watcher"
    after = ["client", "replica"]
    command = "watch"
    ready = { line = "^up [0-9]+$" }
    [[host.process]]
    name = "logger"
    command = "log"
    ready = { delay = "2s" }
"#;

#[test]
fn sweeps_expand_every_template_per_point() {
    let e = parse(SWEPT).unwrap();
    assert_eq!(e.vars, ["per_host", "secs"]);
    let names: Vec<&str> = e.points.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["per_host-1_secs-3", "per_host-2_secs-3"]);
    let second = &e.points[1].plan;
    assert_eq!(second.duration, Some(Duration::from_secs(3)));
    assert_eq!(second.setup, ["mkdir -p /tmp/x/per_host-2_secs-3/a"]);
    assert!(second.teardown.is_empty());
    let clients: Vec<&Proc> = second.procs.iter().filter(|p| p.name == "client").collect();
    assert_eq!(clients.len(), 2);
    assert_eq!(clients[1].command, "client 1 of 2");
    assert_eq!(
        clients[1].env,
        [
            ("ID".to_string(), "1".to_string()),
            ("N".into(), "3".into()),
            ("POINT".into(), "per_host-2_secs-3".into())
        ]
    );
    assert_eq!(clients[1].cwd.as_deref(), Some("/tmp/x/per_host-2_secs-3"));
    assert_eq!(e.points[0].plan.procs.len(), 4);
    let replica = &second.procs[0];
    assert_eq!(
        replica.ready,
        Some(Ready::Port {
            host: "localhost".into(),
            port: 700
        })
    );
    assert_eq!(replica.ready_timeout, Duration::from_secs(5));
    assert_eq!(
        second.procs.last().unwrap().ready,
        Some(Ready::Delay(Duration::from_secs(2)))
    );
    // Results layout: everything of a process in one directory per point.
    assert_eq!(
        second.output_paths(clients[0]).unwrap().0,
        PathBuf::from("out/per_host-2_secs-3/a/client-0/stdout")
    );
    assert_eq!(
        second.fetch_dir(clients[0]),
        PathBuf::from("out/per_host-2_secs-3/a/client-0")
    );
}

#[test]
fn phases_follow_what_processes_wait_for() {
    let plan = parse(SWEPT).unwrap().points.remove(1).plan;
    let phases: Vec<String> = plan
        .phases
        .iter()
        .enumerate()
        .map(|(k, p)| p.label(k))
        .collect();
    assert_eq!(
        phases,
        [
            "1 (replica, logger)",
            "2 (client, after replica)",
            "3 (watcher, after client, replica)"
        ]
    );
    let of: Vec<(String, usize)> = plan.procs.iter().map(|p| (p.label(), p.phase)).collect();
    assert_eq!(
        of,
        [
            ("replica[0]".to_string(), 0),
            ("client[0]".into(), 1),
            ("client[1]".into(), 1),
            ("watcher[0]".into(), 2),
            ("logger[0]".into(), 0)
        ]
    );
}

#[test]
fn without_a_sweep_one_point_in_the_plain_layout() {
    let mut e = parse(PLAN).unwrap();
    assert_eq!(e.points.len(), 1);
    assert!(e.results.is_none());
    let o = Overrides {
        output_dir: Some("o".into()),
        ..Overrides::default()
    };
    e.apply(&o).unwrap();
    let plan = &e.points[0].plan;
    assert_eq!(
        plan.output_paths(&plan.procs[3]).unwrap().1,
        PathBuf::from("o/b/replica-2.err")
    );
    assert_eq!(
        plan.fetch_dir(&plan.procs[0]),
        PathBuf::from("mitossh-run/a/replica-0")
    );
    let o = Overrides {
        results: Some("r".into()),
        ..Overrides::default()
    };
    e.apply(&o).unwrap();
    assert_eq!(e.points[0].plan.layout, Layout::Point("r/run".into()));
    let o = Overrides {
        fetch_dir: Some("f".into()),
        ..Overrides::default()
    };
    assert!(e.apply(&o).unwrap_err().contains("results directory"));
}

#[test]
fn phase_and_readiness_mistakes_are_reported() {
    let with = |extra: &str| {
        parse(&format!(
            "[[host]]\naddress = \"a\"\n[[host.process]]\nname = \"x\"\ncommand = \"c\"\n{extra}\n"
        ))
    };
    assert!(
        with("after = \"nobody\"")
            .unwrap_err()
            .contains("no process has that name")
    );
    assert!(with("after = \"x\"").unwrap_err().contains("after itself"));
    assert!(
        with("ready = { port = 1, line = \"a\" }")
            .unwrap_err()
            .contains("exactly one")
    );
    assert!(
        with("ready = { port = \"99999\" }")
            .unwrap_err()
            .contains("port number")
    );
    assert!(
        with("ready = { line = \"(\" }")
            .unwrap_err()
            .contains("ready line")
    );
    assert!(
        with("count = \"many\"")
            .unwrap_err()
            .contains("whole number")
    );
    assert!(
        with("env = { \"A=B\" = \"1\" }")
            .unwrap_err()
            .contains("variable name")
    );
    let cycle = "[[host]]\naddress = \"a\"\n\
        [[host.process]]\nname = \"x\"\ncommand = \"c\"\nafter = \"y\"\n\
        [[host.process]]\nname = \"y\"\ncommand = \"c\"\nafter = \"x\"\n";
    assert!(parse(cycle).unwrap_err().contains("wait for each other"));
    let swept = "[sweep]\nc = [1]\n[[host]]\naddress = \"a\"\n[[host.process]]\nname = \"x\"\ncommand = \"{nope}\"\n";
    assert!(
        parse(swept)
            .unwrap_err()
            .starts_with("point c-1: x command: unknown {nope}")
    );
}

#[test]
fn the_readme_seed_scenario_is_a_valid_plan() {
    let readme = include_str!("../../../README.md");
    let start = readme.find("# experiment.toml\n").unwrap();
    let end = start + readme[start..].find("```").unwrap();
    let e = parse(&readme[start..end]).unwrap();
    assert_eq!(e.points.len(), 12);
    assert_eq!(e.points[11].name, "clients-24-r2");
    let last = &e.points[11].plan;
    let count = |name: &str| last.procs.iter().filter(|p| p.name == name).count();
    assert_eq!((count("replica"), count("client")), (24, 24));
    assert_eq!(last.phases.len(), 2);
    assert_eq!(last.hosts.len(), 4);
    let c = last.procs.iter().find(|p| p.name == "client").unwrap();
    assert_eq!(c.env, [("SEED".to_string(), "02".to_string())]);
}

#[test]
fn fetched_names_never_collide_and_existing_destinations_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "fetch_dir = {:?}\n[[host]]\naddress = \"a\"\n[[host.process]]\nname = \"p\"\n\
         command = \"true\"\nfetch = [\"/var/log/app.log\", \"/tmp/app.log\", \"/tmp/stdout\", \"/\"]\n",
        dir.path()
    );
    let exp = parse(&text).unwrap();
    let plan = &exp.points[0].plan;
    let p = &plan.procs[0];
    let names: Vec<String> = (plan.fetch_paths(p).iter())
        .map(|(_, local)| local.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["app.log", "app.log.1", "stdout.1", "file"]);
    assert!(plan.existing_destinations().is_empty());
    let (_, second) = &plan.fetch_paths(p)[1];
    std::fs::create_dir_all(second.parent().unwrap()).unwrap();
    std::fs::write(second, "someone's").unwrap();
    assert_eq!(plan.existing_destinations(), std::slice::from_ref(second));
}

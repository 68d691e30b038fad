#!/usr/bin/env python3
"""Writes alerts-test.yaml: the cases (input series, when each alert must and must not fire) are written here by
hand; each expected alert's annotations are its rule's templates with the alert's labels filled in (so a rule's
wording can change without rewriting the cases, and promtool still checks that the templates render).
Run from this directory: python3 generate.py (needs PyYAML)."""
import re
import yaml

rules = {r['alert']: r for g in yaml.safe_load(open('../../charts/kube-etcd-controller/files/alerts.yaml'))['groups']
         for r in g['rules']}


def ann(alert, labels, value=None):
    def sub(m):
        e = m.group(1).strip()
        if e.startswith('$labels.'):
            return labels[e[len('$labels.'):]]
        if e in ('$value', '$value | humanizePercentage'):
            return value
        raise Exception(e)
    return {k: re.sub(r'\{\{([^}]*)\}\}', sub, v) for k, v in rules[alert]['annotations'].items()}


def alert(name, labels, value=None):
    lab = dict(labels)
    lab['severity'] = rules[name]['labels']['severity']
    return {'exp_labels': lab, 'exp_annotations': ann(name, labels, value)}


NS = 'prod'


def L(cluster, **kw):
    return {'namespace': NS, 'cluster': cluster, **kw}


def S(metric, labels, values):
    inner = ','.join(f'{k}="{v}"' for k, v in {'job': 'etcd-controller', **labels}.items())
    return {'series': f'{metric}{{{inner}}}', 'values': values}


tests = []


def T(name, series, checks, interval='1m'):
    tests.append({'name': name, 'interval': interval, 'input_series': series, 'alert_rule_test': checks})


def C(t, name, alerts):
    return {'eval_time': t, 'alertname': name, 'exp_alerts': alerts}


a, b, c = 'alpha', 'beta', 'gamma'
T('quorum lost: by phase, and by fewer healthy voters than a quorum; not with a quorum healthy', [
    S('etcd_controller_cluster_phase', L(a, phase='QuorumLost'), '0 0 1x10'),
    S('etcd_controller_cluster_phase', L(a, phase='Running'), '1 1 0x10'),
    S('etcd_controller_cluster_healthy_voters', L(b), '3 3 1x10'),
    S('etcd_controller_cluster_quorum', L(b), '2x12'),
    S('etcd_controller_cluster_healthy_voters', L(c), '3x12'),
    S('etcd_controller_cluster_quorum', L(c), '2x12'),
], [
    C('1m', 'EtcdClusterQuorumLost', []),
    C('2m', 'EtcdClusterQuorumLost', []),
    C('4m', 'EtcdClusterQuorumLost', [alert('EtcdClusterQuorumLost', L(a)), alert('EtcdClusterQuorumLost', L(b))]),
])
T('one failure from quorum loss: exactly a quorum healthy for 5 minutes, in clusters of three or more', [
    S('etcd_controller_cluster_healthy_voters', L(a), '3 3 2x12'),
    S('etcd_controller_cluster_quorum', L(a), '2x14'),
    S('etcd_controller_cluster_desired_members', L(a), '3x14'),
    S('etcd_controller_cluster_healthy_voters', L(b), '1x14'),
    S('etcd_controller_cluster_quorum', L(b), '1x14'),
    S('etcd_controller_cluster_desired_members', L(b), '1x14'),
], [
    C('6m', 'EtcdClusterOneFailureFromQuorumLoss', []),
    C('8m', 'EtcdClusterOneFailureFromQuorumLoss', [alert('EtcdClusterOneFailureFromQuorumLoss', L(a))]),
])
T('member down: fewer Ready members than spec.size for 10 minutes', [
    S('etcd_controller_cluster_desired_members', L(a), '3x20'),
    S('etcd_controller_cluster_ready_members', L(a), '3 2x19'),
    S('etcd_controller_cluster_desired_members', L(b), '3x20'),
    S('etcd_controller_cluster_ready_members', L(b), '3 2 3x18'),
], [
    C('10m', 'EtcdMemberDown', []),
    C('12m', 'EtcdMemberDown', [alert('EtcdMemberDown', L(a), '1')]),
])
T('no leader: none reported for 2 minutes, but not while the cluster is created, recovered or without quorum', [
    S('etcd_controller_cluster_leader', L(a), '1 0x10'),
    S('etcd_controller_cluster_phase', L(a, phase='Running'), '1x11'),
    S('etcd_controller_cluster_leader', L(b), '1 0x10'),
    S('etcd_controller_cluster_phase', L(b, phase='Recovering'), '0 1x10'),
    S('etcd_controller_cluster_leader', L(c), '1 0x10'),
    S('etcd_controller_cluster_phase', L(c, phase='QuorumLost'), '0 1x10'),
], [
    C('2m', 'EtcdClusterNoLeader', []),
    C('4m', 'EtcdClusterNoLeader', [alert('EtcdClusterNoLeader', L(a))]),
])
T('unreachable: no member answers the controller for 5 minutes, a cluster being created aside', [
    S('etcd_controller_cluster_etcd_reachable', L(a), '1 0x10'),
    S('etcd_controller_cluster_etcd_reachable', L(b), '1 0 1x9'),
    S('etcd_controller_cluster_etcd_reachable', L(c), '0x11'),
    S('etcd_controller_cluster_phase', L(c, phase='Creating'), '1x11'),
], [
    C('5m', 'EtcdClusterUnreachable', []),
    C('7m', 'EtcdClusterUnreachable', [alert('EtcdClusterUnreachable', L(a))]),
])
T('frequent leader changes: more than 3 in an hour', [
    S('etcd_controller_cluster_leader_changes_total', L(a), '0 1 2 3 4 5 5 5'),
    S('etcd_controller_cluster_leader_changes_total', L(b), '0 1 1 1 1 1 1 1'),
], [
    C('2m', 'EtcdClusterFrequentLeaderChanges', []),
    C('6m', 'EtcdClusterFrequentLeaderChanges', [alert('EtcdClusterFrequentLeaderChanges', L(a))]),
])
T('database near quota: a member over 80% of the quota for 10 minutes', [
    S('etcd_controller_member_db_size_bytes', L(a, member='alpha-0000'), '100 900x15'),
    S('etcd_controller_member_db_size_bytes', L(a, member='alpha-0001'), '100x16'),
    S('etcd_controller_cluster_quota_bytes', L(a), '1000x16'),
], [
    C('10m', 'EtcdDatabaseNearQuota', []),
    C('12m', 'EtcdDatabaseNearQuota', [alert('EtcdDatabaseNearQuota', L(a, member='alpha-0000'), '90%')]),
])
T('NOSPACE: at once', [
    S('etcd_controller_cluster_nospace_alarm', L(a), '0 1x5'),
    S('etcd_controller_cluster_nospace_alarm', L(b), '0x6'),
], [
    C('0m', 'EtcdNoSpace', []),
    C('2m', 'EtcdNoSpace', [alert('EtcdNoSpace', L(a))]),
])
T('upgrade stalled: under way for over an hour', [
    S('etcd_controller_cluster_upgrading', L(a), '1x70'),
    S('etcd_controller_cluster_upgrade_started_timestamp_seconds', L(a), '0x70'),
    S('etcd_controller_cluster_upgrading', L(b), '0x70'),
], [
    C('30m', 'EtcdClusterUpgradeStalled', []),
    C('61m', 'EtcdClusterUpgradeStalled', [alert('EtcdClusterUpgradeStalled', L(a))]),
])
T('waiting for a person: for a minute', [
    S('etcd_controller_cluster_waiting_for_person', L(a), '0 1x5'),
    S('etcd_controller_cluster_waiting_for_person', L(b), '0x6'),
], [
    C('1m', 'EtcdClusterWaitingForPerson', []),
    C('3m', 'EtcdClusterWaitingForPerson', [alert('EtcdClusterWaitingForPerson', L(a))]),
])
T('backup too old: none for 1.5 of the hourly schedule and 10 minutes; one taken on time never', [
    S('etcd_controller_backup_interval_seconds', L(a), '3600x110'),
    S('etcd_controller_backup_last_success_timestamp_seconds', L(a), '0x110'),
    S('etcd_controller_backup_interval_seconds', L(b), '3600x110'),
    S('etcd_controller_backup_last_success_timestamp_seconds', L(b), '0+60x110'),
], [
    C('99m', 'EtcdBackupTooOld', []),
    C('101m', 'EtcdBackupTooOld', [alert('EtcdBackupTooOld', L(a))]),
])
T('backups failing: twice in a row, or the sidecar not answering, for 15 minutes', [
    S('etcd_controller_backup_consecutive_failures', L(a), '0 1 2x30'),
    S('etcd_controller_backup_sidecar_reachable', L(a), '1x32'),
    S('etcd_controller_backup_consecutive_failures', L(b), '0x32'),
    S('etcd_controller_backup_sidecar_reachable', L(b), '1 0x31'),
    S('etcd_controller_backup_consecutive_failures', L(c), '0 1 0x30'),
    S('etcd_controller_backup_sidecar_reachable', L(c), '1x32'),
], [
    C('15m', 'EtcdBackupFailing', []),
    C('18m', 'EtcdBackupFailing', [alert('EtcdBackupFailing', L(a)), alert('EtcdBackupFailing', L(b))]),
])
T('certificate expiring: within a week', [
    S('etcd_controller_certificate_expiry_timestamp_seconds', L(a, purpose='peer', secret='alpha-tls-peer'),
      '691200x30'),
], [
    C('23h', 'EtcdCertificateExpiringSoon', []),
    C('25h', 'EtcdCertificateExpiringSoon',
      [alert('EtcdCertificateExpiringSoon', L(a, purpose='peer', secret='alpha-tls-peer'))]),
], interval='1h')
T('controller not reconciling: a cluster not looked at for 10 minutes', [
    S('etcd_controller_build_info', {'version': '0.1.0'}, '1x30'),
    S('etcd_controller_leading', {'pod': 'one'}, '1x30'),
    S('etcd_controller_leading', {'pod': 'two'}, '0x30'),
    S('etcd_controller_cluster_last_observed_timestamp_seconds', L(a), '0+60x5 300x25'),
    S('etcd_controller_cluster_last_observed_timestamp_seconds', L(b), '0+60x30'),
], [
    C('14m', 'EtcdControllerNotReconciling', []),
    C('21m', 'EtcdControllerNotReconciling', [alert('EtcdControllerNotReconciling', L(a))]),
])
T('controller not reconciling: no controller scraped at all', [
    S('up', {'instance': 'other'}, '1x10'),
], [
    C('3m', 'EtcdControllerNotReconciling', []),
    C('6m', 'EtcdControllerNotReconciling', [alert('EtcdControllerNotReconciling', {})]),
])
T('controller not reconciling: the replicas of one release run and none leads, while another release leads', [
    S('etcd_controller_build_info', {'version': '0.1.0', 'namespace': 'team-a', 'pod': 'one'}, '1x10'),
    S('etcd_controller_leading', {'namespace': 'team-a', 'pod': 'one'}, '1 0x9'),
    S('etcd_controller_leading', {'namespace': 'team-a', 'pod': 'two'}, '0x10'),
    S('etcd_controller_build_info', {'version': '0.1.0', 'namespace': 'team-b', 'pod': 'three'}, '1x10'),
    S('etcd_controller_leading', {'namespace': 'team-b', 'pod': 'three'}, '1x10'),
], [
    C('4m', 'EtcdControllerNotReconciling', []),
    C('7m', 'EtcdControllerNotReconciling', [alert('EtcdControllerNotReconciling', {'namespace': 'team-a'})]),
])
doc = {'rule_files': ['../../charts/kube-etcd-controller/files/alerts.yaml'], 'evaluation_interval': '1m',
       'tests': tests}
head = ("# Unit tests of every alert of charts/kube-etcd-controller/files/alerts.yaml with synthetic series: each fires "
        "when\n# it should, with its labels and annotations, and not before (or not for a healthy cluster beside it).\n"
        "# Written by generate.py (the cases are there); run by tests/tests/alerts.rs: "
        "`promtool test rules tests/alerts/alerts-test.yaml`.\n")
open('alerts-test.yaml', 'w').write(head + yaml.safe_dump(doc, sort_keys=False, width=120))

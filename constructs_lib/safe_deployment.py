"""Gradual deployments with automatic rollback: a CodeDeploy deployment group per alias.

CloudFormation hands every change of an alias's version to CodeDeploy (the alias's
``CodeDeployLambdaAliasUpdate`` update policy), which shifts traffic from the old version to
the new one by the deployment configuration, and moves the alias back to the old version as
soon as one of the group's alarms is in ALARM. The alarms watch the alias, so during a canary
they see what the new version does to the traffic it serves.

These alarms guard deployments and do not page: a rollback fails the stack update, which the
person deploying sees. They are named ``<prefix>-<Name>`` like every Fastbreak alarm and
link a runbook section (``docs/runbooks.md#canary-rollback``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_codedeploy as codedeploy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from constructs_lib.defaults import DEPLOYMENT_CONFIGS
from constructs_lib.nag import acknowledge
from constructs_lib.props import ConstructPropsError
from constructs_lib.runbooks import runbook_url

ROLLBACK_RUNBOOK = "canary-rollback"


@dataclass(frozen=True)
class RollbackAlarm:
    """An alarm that rolls a deployment back: ``metric`` over ``threshold`` in one period."""

    name: str
    summary: str
    metric: cloudwatch.IMetric
    threshold: float


def alias_errors(name: str, summary: str, alias: lambda_.Alias) -> RollbackAlarm:
    """Rolls back when the alias fails any invocation: a crash, a timeout, out of memory."""
    return RollbackAlarm(
        name, summary,
        alias.metric_errors(statistic=cloudwatch.Stats.SUM, period=Duration.minutes(1)), 0,
    )


class SafeDeployment(Construct):
    """Exposes ``application``, ``deployment_group``, ``role`` and ``alarms`` (by name)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        alias: lambda_.Alias,
        deployment_config: codedeploy.ILambdaDeploymentConfig,
        alarms: Sequence[RollbackAlarm],
        name_prefix: str,
        runbook_base_url: str = "",
    ) -> None:
        super().__init__(scope, construct_id)
        if not alarms:
            raise ValueError("a safe deployment needs at least one alarm that rolls it back")
        self.alarms: dict[str, cloudwatch.Alarm] = {
            spec.name: cloudwatch.Alarm(
                self,
                spec.name,
                alarm_name=f"{name_prefix}-{spec.name}",
                alarm_description=(
                    f"{spec.summary} Rolls back a deployment in progress. Runbook: "
                    f"{runbook_url(runbook_base_url, ROLLBACK_RUNBOOK)}"
                ),
                metric=spec.metric,
                threshold=spec.threshold,
                # One period, no window: a canary lasts minutes.
                evaluation_periods=1,
                datapoints_to_alarm=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                # No traffic during a deployment is no evidence against the new version.
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
            for spec in alarms
        }
        self.application = codedeploy.LambdaApplication(self, "Application")
        # CodeDeploy's own role, with what a Lambda deployment calls, on this alias and these
        # alarms only (the AWS-managed AWSCodeDeployRoleForLambdaLimited grants it on "*").
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("codedeploy.amazonaws.com"),
            description="Fastbreak: shifts one alias between versions and reads its alarms",
        )
        function_arn = alias.version.lambda_.function_arn
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["lambda:GetAlias", "lambda:UpdateAlias",
                         "lambda:GetProvisionedConcurrencyConfig"],
                resources=[function_arn, f"{function_arn}:{alias.alias_name}"],
            )
        )
        stack = Stack.of(self)
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:DescribeAlarms"],
                resources=[
                    stack.format_arn(service="cloudwatch", resource="alarm",
                                     resource_name=f"{name_prefix}-{name}",
                                     arn_format=ArnFormat.COLON_RESOURCE_NAME)
                    for name in self.alarms
                ],
            )
        )
        self.deployment_group = codedeploy.LambdaDeploymentGroup(
            self,
            "Group",
            application=self.application,
            alias=alias,
            deployment_config=deployment_config,
            alarms=list(self.alarms.values()),
            # Handed over without policy updates: the group would attach the AWS-managed policy.
            role=self.role.without_policy_updates(),
            auto_rollback=codedeploy.AutoRollbackConfig(
                failed_deployment=True, stopped_deployment=True, deployment_in_alarm=True
            ),
        )
        for alarm in self.alarms.values():
            acknowledge(
                alarm,
                {
                    "NIST.800.53.R5::NIST.800.53.R5-CloudWatchAlarmAction": (
                        "acted on by CodeDeploy, which polls this alarm during a deployment and "
                        "rolls the alias back; the failed stack update tells whoever deploys, "
                        "and an alarm outside a deployment has nothing to act on"
                    ),
                },
            )
        acknowledge(
            self.role,
            {
                "NIST.800.53.R5::NIST.800.53.R5-IAMNoInlinePolicy": (
                    "the inline policy of this CodeDeploy role names one alias and its "
                    "rollback alarms; a customer-managed policy would be attached to nothing else"
                ),
            },
        )


def named_deployment_config(construct: str, name: str) -> codedeploy.ILambdaDeploymentConfig:
    """CodeDeploy's predefined configuration called ``name`` in cdk.json."""
    if name not in DEPLOYMENT_CONFIGS:
        raise ConstructPropsError(
            f"{construct}: prop 'deployment' must be one of {', '.join(DEPLOYMENT_CONFIGS)}, "
            f"got {name!r}"
        )
    return DEPLOYMENT_CONFIGS[name]

// certrenew — log alert rules on the app's Application Insights custom events.
//
// The rules are scoped to the (workspace-based) Application Insights
// component, so the queries use the classic `customEvents` schema
// (name / customDimensions). The same events are in the workspace's
// `AppEvents` table (Name / Properties).

param location string
param tags object

@description('Resource id of the Application Insights component the rules query.')
param appInsightsId string

@description('Prefix for the alert rule names.')
param namePrefix string

@description('Action group resource ids notified by every rule (may be empty).')
param actionGroupIds array

resource renewalFailedAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-renewal-failed'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'certrenew: certificate renewal failed'
    description: 'Fires when any CertificateRenewalFailed custom event was recorded in the last 15 minutes. See customDimensions of the events for the certificate and the error.'
    severity: 1
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    autoMitigate: false
    // Created in the same deployment as the Application Insights component, whose schema is not queryable yet:
    // validation would fail the first deployment. The query is checked offline instead (tests/infra/test_kql.py).
    skipQueryValidation: true
    criteria: {
      allOf: [
        {
          query: 'customEvents | where name == "CertificateRenewalFailed"'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: actionGroupIds
    }
  }
}

resource nearExpiryAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-near-expiry'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'certrenew: certificate near expiry'
    description: 'Daily: fires when any CertificateNearExpiry custom event was recorded in the last day (a certificate is inside RENEWAL_WARNING_DAYS and has not been renewed).'
    severity: 2
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'P1D'
    windowSize: 'P1D'
    autoMitigate: false
    // Created in the same deployment as the Application Insights component, whose schema is not queryable yet:
    // validation would fail the first deployment. The query is checked offline instead (tests/infra/test_kql.py).
    skipQueryValidation: true
    criteria: {
      allOf: [
        {
          query: 'customEvents | where name == "CertificateNearExpiry"'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: actionGroupIds
    }
  }
}

// The endpoint check (verify_endpoints, every 6 hours by default) emits CertificateNotDeployed for each endpoint
// still serving another certificate than the current Key Vault version: renewed, but not deployed.
resource notDeployedAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-not-deployed'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'certrenew: renewed certificate not deployed'
    description: 'Every 6 hours: fires when any CertificateNotDeployed custom event was recorded in the last 6 hours (an endpoint in ENDPOINT_CHECKS serves another certificate than the current version in Key Vault). customDimensions name the host and both thumbprints; customMeasurements.daysLeft is how long the served certificate remains valid.'
    severity: 2
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT6H'
    windowSize: 'PT6H'
    autoMitigate: false
    // As above: not validated on deploy (a new component's schema is not queryable yet); checked offline.
    skipQueryValidation: true
    criteria: {
      allOf: [
        {
          query: 'customEvents | where name == "CertificateNotDeployed" | extend certificate = tostring(customDimensions.certificateName), endpointHost = tostring(customDimensions.host), daysLeft = toint(customMeasurements.daysLeft) | project timestamp, certificate, endpointHost, daysLeft'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: actionGroupIds
    }
  }
}

// The consumer discovery (discover_consumers, every 6 hours by default) emits CertificateConsumerPinned for each Azure
// resource that references a version of a certificate that is no longer the current one: it will never move to the
// renewal, and serves the old certificate until it expires.
resource consumerPinnedAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-consumer-pinned'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'certrenew: Azure resource pinned to an old certificate version'
    description: 'Every 6 hours: fires when any CertificateConsumerPinned custom event was recorded in the last 6 hours (an Application Gateway, Front Door secret, API Management host name or Container Apps certificate references a Key Vault secret version that is not the current one). customDimensions name the resource, the pinned and the current version; customMeasurements.daysLeft is how long the pinned certificate remains valid. Point the resource at the versionless secret URI (or the current version).'
    severity: 2
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT6H'
    windowSize: 'PT6H'
    autoMitigate: false
    // As above: not validated on deploy (a new component's schema is not queryable yet); checked offline.
    skipQueryValidation: true
    criteria: {
      allOf: [
        {
          query: 'customEvents | where name == "CertificateConsumerPinned" | extend certificate = tostring(customDimensions.certificateName), consumerId = tostring(customDimensions.consumerId), pinnedVersion = tostring(customDimensions.pinnedVersion), daysLeft = toint(customMeasurements.daysLeft) | project timestamp, certificate, consumerId, pinnedVersion, daysLeft'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: actionGroupIds
    }
  }
}

// The morning check (verify_renewals) ends every run with one RclVerifyRunCompleted event. No succeeded run in the
// last 26 hours (the check stopped, or never ran), or a latest run that failed, means failures and near-expiry
// warnings may go unheard: this rule fires then. `summarize` without `by` answers one row even when no event
// exists, so a missing check is caught too.
resource verifyCheckAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-rcl-check-failed-or-missing'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'certrenew: RCL morning check failed or missing'
    description: 'Fires when the latest RclVerifyRunCompleted event of the last 26 hours is not outcome succeeded, or there is none: renewal outcomes and near-expiry warnings are not being checked. See customDimensions.reason and message of the event.'
    severity: 1
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT6H'
    windowSize: 'P2D'
    autoMitigate: false
    // As above: not validated on deploy (a new component's schema is not queryable yet); checked offline.
    skipQueryValidation: true
    criteria: {
      allOf: [
        {
          query: 'customEvents | where timestamp > ago(26h) and name == "RclVerifyRunCompleted" | summarize lastRun = max(timestamp), lastSucceeded = maxif(timestamp, tostring(customDimensions.outcome) == "succeeded") | where isnull(lastSucceeded) or lastRun > lastSucceeded'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: actionGroupIds
    }
  }
}

// The daily renewal sweep (plan_renewals) ends every run with one RenewalSweepCompleted event. None in the last 26
// hours means no certificate is being renewed on time by the sweep and the expiry ladder is silent: this rule fires.
// `summarize` without `by` answers one row even when no event exists, so a missing sweep is caught.
resource sweepMissingAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: '${namePrefix}-renewal-sweep-missing'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'certrenew: daily renewal sweep missing'
    description: 'Fires when no RenewalSweepCompleted event arrived in the last 26 hours: the daily renewal sweep (plan_renewals) did not run or did not finish, so certificates may expire unrenewed and unreported. Look for plan_renewals failures in the function logs.'
    severity: 1
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT6H'
    windowSize: 'P2D'
    autoMitigate: false
    // As above: not validated on deploy (a new component's schema is not queryable yet); checked offline.
    skipQueryValidation: true
    criteria: {
      allOf: [
        {
          query: 'customEvents | where timestamp > ago(26h) and name == "RenewalSweepCompleted" | summarize runs = count() | where runs == 0'
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: actionGroupIds
    }
  }
}

output renewalFailedAlertId string = renewalFailedAlert.id
output nearExpiryAlertId string = nearExpiryAlert.id
output notDeployedAlertId string = notDeployedAlert.id
output verifyCheckAlertId string = verifyCheckAlert.id
output sweepMissingAlertId string = sweepMissingAlert.id

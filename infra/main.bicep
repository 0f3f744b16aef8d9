// certrenew — infrastructure entry point for azd (`azd up` / `azd provision`).
//
// Subscription-scoped so that azd can create the resource group; everything
// else lives in ./modules/resources.bicep (resource-group scope).

targetScope = 'subscription'

// ---------------------------------------------------------------------------
// azd environment
// ---------------------------------------------------------------------------

@minLength(1)
@maxLength(64)
@description('Name of the azd environment. Used for the resource group name, the azd-env-name tag and the unique resource token.')
param environmentName string

// The regions that offer the Flex Consumption plan: the one list of them in this repository (azd offers only these).
// Refresh it from `az functionapp list-flexconsumption-locations --query "[].name" -o tsv`.
@minLength(1)
@description('Azure region for all resources. Must be a region that offers the Flex Consumption plan.')
@allowed([
  'australiaeast'
  'australiasoutheast'
  'brazilsouth'
  'canadacentral'
  'centralindia'
  'centralus'
  'eastasia'
  'eastus'
  'eastus2'
  'francecentral'
  'germanywestcentral'
  'italynorth'
  'japaneast'
  'koreacentral'
  'northcentralus'
  'northeurope'
  'norwayeast'
  'southafricanorth'
  'southcentralus'
  'southeastasia'
  'southindia'
  'spaincentral'
  'swedencentral'
  'uaenorth'
  'uksouth'
  'ukwest'
  'westcentralus'
  'westeurope'
  'westus'
  'westus2'
  'westus3'
])
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Optional resource group name. Defaults to rg-<environmentName>.')
param resourceGroupName string = ''

// ---------------------------------------------------------------------------
// Function app sizing
// ---------------------------------------------------------------------------

@minValue(40)
@maxValue(1000)
@description('Flex Consumption maximum instance count (40 is the platform minimum).')
param maximumInstanceCount int = 40

@allowed([
  512
  2048
  4096
])
@description('Flex Consumption instance memory size in MB.')
param instanceMemoryMB int = 2048

// ---------------------------------------------------------------------------
// AppViewX (webhook renewal path)
// ---------------------------------------------------------------------------

@minLength(1)
@description('AppViewX API base URL, for example https://avx.contoso.com:31443/avxapi')
param avxApiUrl string

@minLength(1)
@description('AppViewX service account user name.')
param avxUsername string

@secure()
@description('AppViewX service account password. Stored in Key Vault as AVX-PASSWORD (only when non-empty).')
param avxPassword string = ''

@description('AppViewX gateway source (AVX_GWSOURCE).')
param avxGwSource string = 'external'

@description('AppViewX ttl query parameter of the synchronous renew: seconds AppViewX keeps the renew answer available after processing it (AVX_SYNC_TTL_SECONDS). Not a timeout of the app (AVX_TIMEOUT_SECONDS).')
param avxSyncTtlSeconds string = '300'

@description('AppViewX HTTP timeout in seconds (AVX_TIMEOUT_SECONDS).')
param avxTimeoutSeconds string = '200'

@description('Optional path, on the Function App\'s file system, of a PEM file with the CA certificates that verify the AppViewX TLS certificate (AVX_CA_BUNDLE), for example a file shipped in the app package (/home/site/wwwroot/avx-ca.pem). A path, not the PEM text. Empty = system trust store.')
param avxCaBundle string = ''

@description('AppViewX authentication mode (AVX_AUTH_MODE).')
param avxAuthMode string = 'headers'

@description('Optional AppViewX OAuth client id (AVX_CLIENT_ID).')
param avxClientId string = ''

@secure()
@description('Optional AppViewX OAuth client secret. Stored in Key Vault as AVX-CLIENT-SECRET (only when non-empty).')
param avxClientSecret string = ''

// ---------------------------------------------------------------------------
// Key Vault
// ---------------------------------------------------------------------------

@allowed([
  'default'
  'recover'
])
@description('Key Vault create mode. After `azd down` the vault stays soft-deleted (purge protection) and keeps its name for 90 days: provision once with \'recover\' (azd env set KEY_VAULT_CREATE_MODE recover) to bring it back, then set it back to \'default\'.')
param keyVaultCreateMode string = 'default'

@description('KEY_VAULT_VERIFY_CHALLENGE_RESOURCE for the Key Vault SDK clients.')
param keyVaultVerifyChallengeResource string = 'true'

// ---------------------------------------------------------------------------
// RCL Let's Encrypt service (nightly renewal path)
// ---------------------------------------------------------------------------

@description('RCL Let\'s Encrypt renewal API base URL (RCL_API_URL).')
param rclApiUrl string = 'https://letsencryptapi.azure-api.net/api/v2'

@description('Token scope requested for the RCL API (RCL_TOKEN_SCOPE).')
// The RCL service expects an ARM-audience token; keep the literal documented value.
#disable-next-line no-hardcoded-env-urls
param rclTokenScope string = 'https://management.core.windows.net/.default'

@description('Optional app registration client id for the RCL API; empty = use the managed identity (RCL_CLIENT_ID).')
param rclClientId string = ''

@secure()
@description('Optional app registration client secret for the RCL API. Stored in Key Vault as RCL-CLIENT-SECRET (only when non-empty).')
param rclClientSecret string = ''

@description('Optional tenant id for the RCL app registration (RCL_TENANT_ID).')
param rclTenantId string = ''

@description('Send a Key Vault access token to the RCL API (RCL_SEND_KEY_VAULT_TOKEN).')
param rclSendKeyVaultToken string = 'true'

@description('NCRONTAB (UTC) schedule of the nightly RCL renewal (RCL_RENEWAL_SCHEDULE).')
param rclRenewalSchedule string = '0 0 2 * * *'

@description('NCRONTAB (UTC) schedule of the renewal verification run (RCL_VERIFY_SCHEDULE).')
param rclVerifySchedule string = '0 30 2 * * *'

@description('Hours a renewal may take before verification reports it as failed (RCL_VERIFY_GRACE_HOURS).')
param rclVerifyGraceHours string = '24'

@description('RCL API HTTP timeout in seconds (RCL_TIMEOUT_SECONDS).')
param rclTimeoutSeconds string = '60'

@description('Seconds before the one retry of a failed RCL call (RCL_RETRY_DELAY_SECONDS).')
param rclRetryDelaySeconds string = '10'

// ---------------------------------------------------------------------------
// Renewal state / webhook
// ---------------------------------------------------------------------------

@description('Days before expiry at which CertificateNearExpiry is emitted (RENEWAL_WARNING_DAYS).')
param renewalWarningDays string = '14'

@description('Table storage table for renewal state (RENEWAL_STATE_TABLE).')
param renewalStateTable string = 'certrenewals'

@description('Table storage table for pending AppViewX requests (PENDING_TABLE).')
param pendingTable string = 'avxpending'

@description('Table storage table for webhook idempotency keys (IDEMPOTENCY_TABLE).')
param idempotencyTable string = 'webhookrequests'

@description('NCRONTAB (UTC) schedule of the pending-request retry (PENDING_RETRY_SCHEDULE).')
param pendingRetrySchedule string = '0 */15 * * * *'

@description('Days after which a pending AppViewX request is abandoned (PENDING_MAX_DAYS).')
param pendingMaxDays string = '7'

@secure()
@description('HMAC secret used to authenticate webhook calls. Stored in Key Vault as WEBHOOK-HMAC-SECRET (only when non-empty).')
param webhookHmacSecret string = ''

@description('true: the webhook refuses to run without WEBHOOK_HMAC_SECRET (WEBHOOK_REQUIRE_SIGNATURE); always true when webhookHmacSecret is given.')
param webhookRequireSignature string = 'false'

@secure()
@description('Optional Teams/Slack/JSON webhook told of failures and near expiry (NOTIFY_WEBHOOK_URL). Its URL carries a signature, so it is stored in Key Vault as NOTIFY-WEBHOOK-URL (only when non-empty).')
param notifyWebhookUrl string = ''

@description('Force the notification format: teams, slack or json; empty chooses by the URL host (NOTIFY_FORMAT).')
param notifyFormat string = ''

// ---------------------------------------------------------------------------
// Endpoint check (is the renewed certificate deployed?)
// ---------------------------------------------------------------------------

@description('JSON array of endpoints whose served certificate is compared with Key Vault (ENDPOINT_CHECKS): [{"certificate": "<Key Vault name>", "host": "<DNS name>", "address": "<host or IP>:<port>"}], address optional.')
param endpointChecks string = '[]'

@description('NCRONTAB (UTC) schedule of the endpoint check (ENDPOINT_CHECK_SCHEDULE).')
param endpointCheckSchedule string = '0 0 */6 * * *'

// ---------------------------------------------------------------------------
// Daily renewal sweep (plan_renewals)
// ---------------------------------------------------------------------------

@description('NCRONTAB (UTC) schedule of the daily renewal sweep plan_renewals (RENEWAL_SWEEP_SCHEDULE).')
param renewalSweepSchedule string = '0 30 4 * * *'

@description('A certificate is due for renewal when less than this share of its lifetime is left (RENEW_AT_REMAINING_FRACTION; at least 0.5 for lifetimes under 10 days).')
param renewAtRemainingFraction string = '0.3333'

@description('Also due when fewer than this many days are left (RENEW_BEFORE_DAYS); empty: by lifetime only.')
param renewBeforeDays string = ''

@description('At most this many renewals per sweep, the most urgent first (RENEWAL_SWEEP_MAX_RENEWALS).')
param renewalSweepMaxRenewals string = '10'

// ---------------------------------------------------------------------------
// Certificate consumers (Azure Resource Graph)

@description('Comma-separated subscription ids whose resources discover_consumers looks through (CONSUMER_SUBSCRIPTIONS); the app\'s identity gets Reader on each, nothing more. Empty: discovery is off.')
param consumerSubscriptions string = ''

@description('NCRONTAB (UTC) schedule of the consumer discovery (CONSUMER_DISCOVERY_SCHEDULE).')
param consumerDiscoverySchedule string = '0 30 */6 * * *'

@description('At most this many resources are read per discovery run (CONSUMER_MAX_PER_RUN).')
param consumerMaxPerRun string = '2000'

// ---------------------------------------------------------------------------
// Key Vault events
// ---------------------------------------------------------------------------

@allowed([
  'true'
  'false'
])
@description('Subscribe keyvault_events to the vault\'s certificate near-expiry and expired events. Event Grid refuses a subscription to a function that is not deployed yet: after the first `azd up`, run `azd env set KEY_VAULT_EVENTS_SUBSCRIPTION true` and `azd provision`.')
param keyVaultEventsSubscription string = 'false'

// ---------------------------------------------------------------------------
// Alerting
// ---------------------------------------------------------------------------

@description('Optional e-mail address; when set, an action group that e-mails it is created and attached to every alert.')
param alertEmailAddress string = ''

@description('Optional resource id of an existing action group to attach to every alert.')
param alertActionGroupId string = ''

// ---------------------------------------------------------------------------

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}

resource rg 'Microsoft.Resources/resourceGroups@2022-09-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : 'rg-${environmentName}'
  location: location
  tags: tags
}

var consumerSubscriptionIds = filter(map(split(consumerSubscriptions, ','), id => toLower(trim(id))), id => !empty(id))

module resources './modules/resources.bicep' = {
  name: 'certrenew-resources'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    avxApiUrl: avxApiUrl
    avxUsername: avxUsername
    avxPassword: avxPassword
    avxGwSource: avxGwSource
    avxSyncTtlSeconds: avxSyncTtlSeconds
    avxTimeoutSeconds: avxTimeoutSeconds
    avxCaBundle: avxCaBundle
    avxAuthMode: avxAuthMode
    avxClientId: avxClientId
    avxClientSecret: avxClientSecret
    keyVaultVerifyChallengeResource: keyVaultVerifyChallengeResource
    keyVaultCreateMode: keyVaultCreateMode
    rclApiUrl: rclApiUrl
    rclTokenScope: rclTokenScope
    rclClientId: rclClientId
    rclClientSecret: rclClientSecret
    rclTenantId: rclTenantId
    rclSendKeyVaultToken: rclSendKeyVaultToken
    rclRenewalSchedule: rclRenewalSchedule
    rclVerifySchedule: rclVerifySchedule
    rclVerifyGraceHours: rclVerifyGraceHours
    rclTimeoutSeconds: rclTimeoutSeconds
    rclRetryDelaySeconds: rclRetryDelaySeconds
    renewalWarningDays: renewalWarningDays
    renewalStateTable: renewalStateTable
    pendingTable: pendingTable
    idempotencyTable: idempotencyTable
    pendingRetrySchedule: pendingRetrySchedule
    pendingMaxDays: pendingMaxDays
    webhookHmacSecret: webhookHmacSecret
    webhookRequireSignature: webhookRequireSignature
    notifyWebhookUrl: notifyWebhookUrl
    notifyFormat: notifyFormat
    endpointChecks: endpointChecks
    endpointCheckSchedule: endpointCheckSchedule
    renewalSweepSchedule: renewalSweepSchedule
    renewAtRemainingFraction: renewAtRemainingFraction
    renewBeforeDays: renewBeforeDays
    renewalSweepMaxRenewals: renewalSweepMaxRenewals
    consumerSubscriptions: join(consumerSubscriptionIds, ',')
    consumerDiscoverySchedule: consumerDiscoverySchedule
    consumerMaxPerRun: consumerMaxPerRun
    alertEmailAddress: alertEmailAddress
    alertActionGroupId: alertActionGroupId
    keyVaultEventsSubscription: keyVaultEventsSubscription
  }
}

// Reader on each subscription discover_consumers queries (Azure Resource Graph shows only what the identity may read).
module consumerReaders './modules/consumer-reader.bicep' = [
  for id in consumerSubscriptionIds: {
    name: 'certrenew-consumer-reader-${uniqueString(id, environmentName)}'
    scope: subscription(id)
    params: {
      principalId: resources.outputs.identityPrincipalId
    }
  }
]

// Outputs become azd environment values. No secrets (and no App Insights
// connection string) are emitted here.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = resources.outputs.functionAppName
output AZURE_FUNCTION_APP_URL string = resources.outputs.functionAppUrl
output AZURE_MANAGED_IDENTITY_CLIENT_ID string = resources.outputs.identityClientId
output RCL_KEY_VAULT_CLIENT_ID string = resources.outputs.rclKeyVaultIdentityClientId
output AZURE_KEY_VAULT_NAME string = resources.outputs.keyVaultName
output KEY_VAULT_URL string = resources.outputs.keyVaultUrl
output AZURE_STORAGE_ACCOUNT_NAME string = resources.outputs.storageAccountName

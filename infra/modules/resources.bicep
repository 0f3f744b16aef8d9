// certrenew — resource-group scoped resources.
//
// Flex Consumption function app (Python 3.13) running as a user-assigned
// managed identity, identity-based storage, RBAC-mode Key Vault with Key Vault
// references for secrets, workspace-based Application Insights and log
// alert rules on the app's custom events.

param location string
param tags object
param resourceToken string

param maximumInstanceCount int
param instanceMemoryMB int
@description('Renewal queue of the asynchronous webhook (RENEWAL_QUEUE).')
param renewalQueue string = 'certificate-renewals'
@description('Concurrent HTTP requests per instance (Flex Consumption perInstanceConcurrency); see docs/async.md "Concurrency".')
param httpPerInstanceConcurrency int = 16

param avxApiUrl string
param avxUsername string
@secure()
param avxPassword string
param avxGwSource string
param avxSyncTtlSeconds string
param avxTimeoutSeconds string
param avxAdoptableCertificates string
param avxCaBundle string
param avxAuthMode string
param avxClientId string
@secure()
param avxClientSecret string

param keyVaultVerifyChallengeResource string

param rclApiUrl string
param rclTokenScope string
param rclClientId string
@secure()
param rclClientSecret string
param rclTenantId string
param rclSendKeyVaultToken string
param rclRenewalSchedule string
param rclVerifySchedule string
param rclVerifyGraceHours string
param rclTimeoutSeconds string
param rclRetryDelaySeconds string

param renewalWarningDays string
param renewalStateTable string
param pendingTable string
param idempotencyTable string
param pendingRetrySchedule string
param pendingMaxDays string
@secure()
param webhookHmacSecret string
param webhookRequireSignature string
@secure()
param notifyWebhookUrl string
param notifyFormat string
param endpointChecks string
param endpointCheckSchedule string
param renewalSweepSchedule string
param renewAtRemainingFraction string
param renewBeforeDays string
param renewalSweepMaxRenewals string
param consumerSubscriptions string
param consumerDiscoverySchedule string
param consumerMaxPerRun string
param consumerTable string = 'certconsumers'

@allowed([
  'default'
  'recover'
])
param keyVaultCreateMode string

param alertEmailAddress string
param alertActionGroupId string

@allowed([
  'true'
  'false'
])
param keyVaultEventsSubscription string

// Further vaults the app writes to (after its own, the default): { name, subscriptionId, resourceGroup, location,
// create } (main.bicep fills in the defaults). Each gets Certificates Officer for the app and RCL's identity, its system topic and subscription.
param additionalKeyVaults array = []

@description('KEY_VAULT_CALLERS: JSON object, caller principal id or name -> the vault names it may write to.')
param keyVaultCallers string = ''

// ---------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------

var identityName = 'id-certrenew-${resourceToken}'
var rclKeyVaultIdentityName = 'id-certrenew-rclkv-${resourceToken}'
var storageAccountName = 'stcr${resourceToken}'
var keyVaultName = 'kv-cr-${resourceToken}'
var logAnalyticsName = 'log-certrenew-${resourceToken}'
var appInsightsName = 'appi-certrenew-${resourceToken}'
var planName = 'plan-certrenew-${resourceToken}'
var functionAppName = 'func-certrenew-${resourceToken}'
var deploymentContainerName = 'app-package'

// Built-in role definition ids.
var roleStorageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var roleStorageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var roleStorageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
var roleKeyVaultCertificatesOfficer = 'a4417e6f-fecd-4de8-b567-7b0420556985'
var roleKeyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'
var roleStorageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
var deadLetterContainerName = 'keyvault-events-deadletter'
// The app's own vault first (the default), then the further ones, by their DNS names in this cloud.
var extraKeyVaultUrls = [for v in additionalKeyVaults: 'https://${v.name}${environment().suffixes.keyvaultDns}/']
var keyVaultUrls = join(concat([keyVault.properties.vaultUri], extraKeyVaultUrls), ',')

// Key Vault secret names (Key Vault allows letters, digits and dashes only).
var secretNameAvxPassword = 'AVX-PASSWORD'
var secretNameAvxClientSecret = 'AVX-CLIENT-SECRET'
var secretNameRclClientSecret = 'RCL-CLIENT-SECRET'
var secretNameWebhookHmacSecret = 'WEBHOOK-HMAC-SECRET'
var secretNameNotifyWebhookUrl = 'NOTIFY-WEBHOOK-URL'

// ---------------------------------------------------------------------------
// Identity
// ---------------------------------------------------------------------------

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: identityName
  location: location
  tags: tags
}

// The identity whose Key Vault token the app hands to RCL (a third party): Key Vault Certificates Officer on the
// vault and nothing else, so the token RCL holds cannot read the app's secrets (AVX password, HMAC secret,
// notification URL). The app only asks it for tokens; all the app's own calls use `identity`.
resource rclKeyVaultIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: rclKeyVaultIdentityName
  location: location
  tags: tags
}

// ---------------------------------------------------------------------------
// Storage (AzureWebJobsStorage, deployment package container, state tables)
// ---------------------------------------------------------------------------

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: No VNet is deployed, so the Flex Consumption host reaches AzureWebJobsStorage and the deployment container over the public endpoint; access is Entra ID only (allowSharedKeyAccess=false) via the app's managed identity RBAC roles.
  // checkov:skip=CKV_AZURE_59: Same reason as CKV_AZURE_35: public network access is required without VNet integration; shared-key/SAS access is disabled and blob public access is off.
  // checkov:skip=CKV_AZURE_206: The account holds the re-deployable code package, host locks and the app's renewal/pending/idempotency tables -- operational state, not the certificates (those are in Key Vault); LRS is enough and GRS/GZRS would add cost without a meaningful recovery benefit.
  // checkov:skip=CKV_AZURE_43: False positive: the name is the expression 'stcr' + uniqueString() (17 lowercase alphanumerics), which checkov cannot resolve statically.
  name: storageAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource storageBlobDataOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, roleStorageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleStorageBlobDataOwner)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource storageQueueDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, roleStorageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleStorageQueueDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource storageTableDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, roleStorageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleStorageTableDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// ---------------------------------------------------------------------------
// Key Vault (RBAC mode) + secrets
// ---------------------------------------------------------------------------

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: The Flex Consumption app has no VNet integration in this deployment, so Key Vault references and the SDK calls come from public App Service outbound IPs that cannot be pinned; access is governed by Entra ID RBAC (enableRbacAuthorization) only.
  // checkov:skip=CKV_AZURE_189: Same reason as CKV_AZURE_109: the app reaches the vault over its public endpoint; disable public access only together with VNet integration + a private endpoint.
  name: keyVaultName
  location: location
  tags: tags
  properties: {
    // 'recover' brings back the soft-deleted vault of the same name after `azd down` (purge protection keeps the
    // name taken for 90 days); 'default' creates a new one or updates the live one.
    createMode: keyVaultCreateMode
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource keyVaultCertificatesOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(keyVault.id, identity.id, roleKeyVaultCertificatesOfficer)
  scope: keyVault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleKeyVaultCertificatesOfficer)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource rclKeyVaultCertificatesOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(keyVault.id, rclKeyVaultIdentity.id, roleKeyVaultCertificatesOfficer)
  scope: keyVault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleKeyVaultCertificatesOfficer)
    principalId: rclKeyVaultIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource keyVaultSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(keyVault.id, identity.id, roleKeyVaultSecretsUser)
  scope: keyVault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleKeyVaultSecretsUser)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// A secret is written only when its parameter is non-empty. When it is empty
// the matching app setting is set to '' (never to a Key Vault reference that
// cannot resolve: App Service would then hand the literal reference string to
// the app, which for WEBHOOK_HMAC_SECRET would be a guessable HMAC key).
module avxPasswordSecret './keyvault-secret.bicep' = if (!empty(avxPassword)) {
  name: 'certrenew-secret-avx-password'
  params: {
    keyVaultName: keyVault.name
    secretName: secretNameAvxPassword
    secretValue: avxPassword
    tags: tags
  }
}

module avxClientSecretSecret './keyvault-secret.bicep' = if (!empty(avxClientSecret)) {
  name: 'certrenew-secret-avx-client-secret'
  params: {
    keyVaultName: keyVault.name
    secretName: secretNameAvxClientSecret
    secretValue: avxClientSecret
    tags: tags
  }
}

module rclClientSecretSecret './keyvault-secret.bicep' = if (!empty(rclClientSecret)) {
  name: 'certrenew-secret-rcl-client-secret'
  params: {
    keyVaultName: keyVault.name
    secretName: secretNameRclClientSecret
    secretValue: rclClientSecret
    tags: tags
  }
}

module webhookHmacSecretSecret './keyvault-secret.bicep' = if (!empty(webhookHmacSecret)) {
  name: 'certrenew-secret-webhook-hmac-secret'
  params: {
    keyVaultName: keyVault.name
    secretName: secretNameWebhookHmacSecret
    secretValue: webhookHmacSecret
    tags: tags
  }
}

module notifyWebhookUrlSecret './keyvault-secret.bicep' = if (!empty(notifyWebhookUrl)) {
  name: 'certrenew-secret-notify-webhook-url'
  params: {
    keyVaultName: keyVault.name
    secretName: secretNameNotifyWebhookUrl
    secretValue: notifyWebhookUrl
    tags: tags
  }
}

// Versionless secret URIs: a new secret version is picked up by App Service on
// its periodic refresh (within 24 hours) or on the next restart/config change.
// Built from the vault URI (which ends with '/') rather than from the
// conditional secret resources, so that nothing dereferences a resource that
// was not deployed.
var kvRefAvxPassword = '@Microsoft.KeyVault(SecretUri=${keyVault.properties.vaultUri}secrets/${secretNameAvxPassword})'
var kvRefAvxClientSecret = '@Microsoft.KeyVault(SecretUri=${keyVault.properties.vaultUri}secrets/${secretNameAvxClientSecret})'
var kvRefRclClientSecret = '@Microsoft.KeyVault(SecretUri=${keyVault.properties.vaultUri}secrets/${secretNameRclClientSecret})'
var kvRefWebhookHmacSecret = '@Microsoft.KeyVault(SecretUri=${keyVault.properties.vaultUri}secrets/${secretNameWebhookHmacSecret})'
var kvRefNotifyWebhookUrl = '@Microsoft.KeyVault(SecretUri=${keyVault.properties.vaultUri}secrets/${secretNameNotifyWebhookUrl})'

// ---------------------------------------------------------------------------
// Monitoring
// ---------------------------------------------------------------------------

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 30
    features: {
      enableLogAccessUsingOnlyResourcePermissions: true
    }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.id
    IngestionMode: 'LogAnalytics'
    publicNetworkAccessForIngestion: 'Enabled'
    publicNetworkAccessForQuery: 'Enabled'
  }
}

resource emailActionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmailAddress)) {
  name: 'ag-certrenew-${resourceToken}'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'certrenew'
    enabled: true
    emailReceivers: [
      {
        name: 'certrenew-operators'
        emailAddress: alertEmailAddress
        useCommonAlertSchema: true
      }
    ]
  }
}

var emailActionGroupIds = empty(alertEmailAddress) ? [] : [
  resourceId('Microsoft.Insights/actionGroups', 'ag-certrenew-${resourceToken}')
]
var existingActionGroupIds = empty(alertActionGroupId) ? [] : [
  alertActionGroupId
]

module alerts './alerts.bicep' = {
  name: 'certrenew-alerts'
  params: {
    location: location
    tags: tags
    appInsightsId: appInsights.id
    namePrefix: 'certrenew-${resourceToken}'
    actionGroupIds: concat(emailActionGroupIds, existingActionGroupIds)
  }
  dependsOn: [
    emailActionGroup
  ]
}

// ---------------------------------------------------------------------------
// Flex Consumption plan + function app
// ---------------------------------------------------------------------------

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: A nightly batch plus a retried webhook does not need zone redundancy, and zone-redundant Flex Consumption is only offered in some regions; enabling it would make the template region-dependent.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: The AppViewX webhook must be reachable from AppViewX over the internet; the endpoint is HTTPS-only (TLS 1.2+) and the app authenticates every call with an HMAC signature (WEBHOOK_HMAC_SECRET).
  // checkov:skip=CKV_AZURE_17: Webhook callers are authenticated by an HMAC signature over the request; requiring TLS client certificates would additionally need a certificate provisioned in AppViewX and is out of scope.
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales instances on demand (siteConfig.numberOfWorkers does not apply); the timer and webhook functions tolerate a cold start.
  // checkov:skip=CKV_AZURE_78: Flex Consumption does not support siteConfig.ftpsState (listed in its deprecation table; newer regions reject the site create with it) and offers no FTP(S) deployment: code is deployed only from the identity-protected blob container in functionAppConfig.deployment.
  // checkov:skip=CKV_AZURE_213: App Service health check does not apply to a scale-to-zero Flex Consumption app and the app exposes no health endpoint; failures are surfaced by the Application Insights alert rules instead.
  name: functionAppName
  location: location
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
      '${rclKeyVaultIdentity.id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identity.id
    siteConfig: {
      // No ftpsState: Flex Consumption does not support it (its deprecation table lists properties.ftpsState) and
      // rejects the whole site create when it is set. Flex sites are deployed from the blob container only.
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      http20Enabled: true
      appSettings: [
        // --- platform: identity-based host storage -------------------------
        {
          name: 'AzureWebJobsStorage__accountName'
          value: storage.name
        }
        {
          name: 'AzureWebJobsStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'AzureWebJobsStorage__clientId'
          value: identity.properties.clientId
        }
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: appInsights.properties.ConnectionString
        }
        // --- identity ------------------------------------------------------
        {
          name: 'AZURE_CLIENT_ID'
          value: identity.properties.clientId
        }
        {
          name: 'RCL_KEY_VAULT_CLIENT_ID'
          value: rclKeyVaultIdentity.properties.clientId
        }
        // --- AppViewX ------------------------------------------------------
        {
          name: 'AVX_API_URL'
          value: avxApiUrl
        }
        {
          name: 'AVX_USERNAME'
          value: avxUsername
        }
        {
          name: 'AVX_PASSWORD'
          value: empty(avxPassword) ? '' : kvRefAvxPassword
        }
        {
          name: 'AVX_GWSOURCE'
          value: avxGwSource
        }
        {
          name: 'AVX_SYNC_TTL_SECONDS'
          value: avxSyncTtlSeconds
        }
        {
          name: 'AVX_TIMEOUT_SECONDS'
          value: avxTimeoutSeconds
        }
        {
          // helper processes that check PFX keys off the worker's interpreter lock (docs/async.md)
          name: 'PFX_OPEN_PROCESSES'
          value: '1'
        }
        {
          name: 'AVX_ADOPTABLE_CERTIFICATES'
          value: avxAdoptableCertificates
        }
        {
          name: 'AVX_CA_BUNDLE'
          value: avxCaBundle
        }
        {
          name: 'AVX_AUTH_MODE'
          value: avxAuthMode
        }
        {
          name: 'AVX_CLIENT_ID'
          value: avxClientId
        }
        {
          name: 'AVX_CLIENT_SECRET'
          value: empty(avxClientSecret) ? '' : kvRefAvxClientSecret
        }
        // --- Key Vault -----------------------------------------------------
        {
          name: 'KEY_VAULT_URL'
          value: keyVault.properties.vaultUri
        }
        {
          name: 'KEY_VAULT_URLS'
          value: keyVaultUrls
        }
        {
          name: 'KEY_VAULT_CALLERS'
          value: keyVaultCallers
        }
        {
          name: 'KEY_VAULT_VERIFY_CHALLENGE_RESOURCE'
          value: keyVaultVerifyChallengeResource
        }
        // --- RCL Let's Encrypt service --------------------------------------
        {
          name: 'RCL_API_URL'
          value: rclApiUrl
        }
        {
          name: 'RCL_TOKEN_SCOPE'
          value: rclTokenScope
        }
        {
          name: 'RCL_CLIENT_ID'
          value: rclClientId
        }
        {
          name: 'RCL_CLIENT_SECRET'
          value: empty(rclClientSecret) ? '' : kvRefRclClientSecret
        }
        {
          name: 'RCL_TENANT_ID'
          value: rclTenantId
        }
        {
          name: 'RCL_SEND_KEY_VAULT_TOKEN'
          value: rclSendKeyVaultToken
        }
        {
          name: 'RCL_RENEWAL_SCHEDULE'
          value: rclRenewalSchedule
        }
        {
          name: 'RCL_VERIFY_SCHEDULE'
          value: rclVerifySchedule
        }
        {
          name: 'RCL_VERIFY_GRACE_HOURS'
          value: rclVerifyGraceHours
        }
        {
          name: 'RCL_TIMEOUT_SECONDS'
          value: rclTimeoutSeconds
        }
        {
          name: 'RCL_RETRY_DELAY_SECONDS'
          value: rclRetryDelaySeconds
        }
        {
          name: 'RCL_INSTALL_GRACE_HOURS'
          value: '24'
        }
        {
          name: 'RCL_RETENTION_DAYS'
          value: '90'
        }
        {
          name: 'RCL_MAX_RESPONSE_MB'
          value: '64'
        }
        // --- renewal state / webhook ----------------------------------------
        {
          name: 'RENEWAL_WARNING_DAYS'
          value: renewalWarningDays
        }
        {
          name: 'RENEWAL_STATE_TABLE'
          value: renewalStateTable
        }
        {
          name: 'PENDING_TABLE'
          value: pendingTable
        }
        {
          name: 'IDEMPOTENCY_TABLE'
          value: idempotencyTable
        }
        {
          // Queue of the asynchronous webhook (Prefer: respond-async); its poison queue is this name + '-poison'.
          name: 'RENEWAL_QUEUE'
          value: renewalQueue
        }
        {
          name: 'PENDING_RETRY_SCHEDULE'
          value: pendingRetrySchedule
        }
        {
          name: 'PENDING_MAX_DAYS'
          value: pendingMaxDays
        }
        {
          // Settled AppViewX renewal records and Key Vault version claims older than this are removed (bounded per run).
          name: 'RENEWAL_RECORD_RETENTION_DAYS'
          value: '400'
        }
        {
          name: 'WEBHOOK_HMAC_SECRET'
          value: empty(webhookHmacSecret) ? '' : kvRefWebhookHmacSecret
        }
        {
          // With a secret deployed, a missing or blank one must stop the webhook, never turn signing off.
          name: 'WEBHOOK_REQUIRE_SIGNATURE'
          value: empty(webhookHmacSecret) ? webhookRequireSignature : 'true'
        }
        {
          name: 'NOTIFY_WEBHOOK_URL'
          value: empty(notifyWebhookUrl) ? '' : kvRefNotifyWebhookUrl
        }
        {
          name: 'NOTIFY_FORMAT'
          value: notifyFormat
        }
        {
          // Messages per 10-minute window, all instances together; the rest are held back and summed up in one digest.
          name: 'NOTIFY_BUDGET'
          value: '20'
        }
        // --- endpoint check -------------------------------------------------
        {
          name: 'ENDPOINT_CHECKS'
          value: endpointChecks
        }
        {
          name: 'ENDPOINT_CHECK_SCHEDULE'
          value: endpointCheckSchedule
        }
        // --- daily renewal sweep ---------------------------------------------
        {
          name: 'RENEWAL_SWEEP_SCHEDULE'
          value: renewalSweepSchedule
        }
        {
          name: 'RENEW_AT_REMAINING_FRACTION'
          value: renewAtRemainingFraction
        }
        {
          name: 'RENEW_BEFORE_DAYS'
          value: renewBeforeDays
        }
        {
          name: 'RENEWAL_SWEEP_MAX_RENEWALS'
          value: renewalSweepMaxRenewals
        }
        // --- certificate consumers (Azure Resource Graph) -----------------------
        {
          name: 'CONSUMER_SUBSCRIPTIONS'
          value: consumerSubscriptions
        }
        {
          // This cloud's Resource Manager (the token's audience is <url>/.default).
          name: 'RESOURCE_MANAGER_URL'
          value: environment().resourceManager
        }
        {
          name: 'CONSUMER_DISCOVERY_SCHEDULE'
          value: consumerDiscoverySchedule
        }
        {
          name: 'CONSUMER_MAX_PER_RUN'
          value: consumerMaxPerRun
        }
        {
          name: 'CONSUMER_TABLE'
          value: consumerTable
        }
      ]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
        triggers: {
          http: {
            // Chosen, not defaulted (bench/RESULTS.md, docs/async.md "Concurrency"): 16 requests per instance, as many as
            // host.json's queue batchSize 4 + newBatchThreshold 12 run at once. Flex Consumption sizes the Python
            // worker's threads itself (PYTHON_THREADPOOL_THREAD_COUNT is not supported there).
            perInstanceConcurrency: httpPerInstanceConcurrency
          }
        }
      }
      runtime: {
        name: 'python'
        version: '3.13' // the newest GA Python on Flex Consumption; CI tests 3.13 and 3.11 (.ci/run)
      }
    }
  }
  // The app must be able to reach its storage and resolve its Key Vault
  // references the first time it starts.
  dependsOn: [
    deploymentContainer
    storageBlobDataOwner
    storageQueueDataContributor
    storageTableDataContributor
    keyVaultCertificatesOfficer
    rclKeyVaultCertificatesOfficer
    keyVaultSecretsUser
    avxPasswordSecret
    avxClientSecretSecret
    rclClientSecretSecret
    webhookHmacSecretSecret
    notifyWebhookUrlSecret
  ]
}

// ---------------------------------------------------------------------------
// Key Vault events (near expiry, expired) to keyvault_events; the workbook
// ---------------------------------------------------------------------------

module keyVaultEvents './keyvault-events.bicep' = {
  name: 'certrenew-keyvault-events'
  params: {
    location: location
    tags: tags
    keyVaultName: keyVault.name
    functionAppName: functionApp.name
    storageAccountName: storage.name
    subscribe: keyVaultEventsSubscription == 'true'
  }
  dependsOn: [
    blobService
  ]
}

// ---------------------------------------------------------------------------
// Further vaults (KEY_VAULT_URLS after the app's own): roles, system topic,
// dead-letter writer here, event subscription once keyvault_events exists
// ---------------------------------------------------------------------------

module extraVaults './keyvault-extra.bicep' = [
  for v in additionalKeyVaults: {
    name: 'certrenew-vault-${v.name}'
    scope: resourceGroup(v.subscriptionId, v.resourceGroup)
    params: {
      location: v.location
      tags: tags
      keyVaultName: v.name
      create: v.create
      keyVaultCreateMode: keyVaultCreateMode
      appPrincipalId: identity.properties.principalId
      rclPrincipalId: rclKeyVaultIdentity.properties.principalId
    }
  }
]

resource deadLetterBlobs 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: deadLetterContainerName
}

// Each further vault's topic writes undeliverable events to the app's dead-letter container only.
resource extraDeadLetterWriters 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for (v, i) in additionalKeyVaults: {
    name: guid(storage.id, deadLetterContainerName, v.name, roleStorageBlobDataContributor)
    scope: deadLetterBlobs
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleStorageBlobDataContributor)
      principalId: extraVaults[i].outputs.systemTopicPrincipalId
      principalType: 'ServicePrincipal'
    }
    dependsOn: [
      keyVaultEvents
    ]
  }
]

module extraVaultEvents './keyvault-extra-events.bicep' = [
  for (v, i) in additionalKeyVaults: if (keyVaultEventsSubscription == 'true') {
    name: 'certrenew-vault-events-${v.name}'
    scope: resourceGroup(v.subscriptionId, v.resourceGroup)
    params: {
      systemTopicName: extraVaults[i].outputs.systemTopicName
      functionAppId: functionApp.id
      storageAccountId: storage.id
      deadLetterContainerName: deadLetterContainerName
    }
    dependsOn: [
      extraDeadLetterWriters
    ]
  }
]

module workbook './workbook.bicep' = {
  name: 'certrenew-workbook'
  params: {
    location: location
    tags: tags
    appInsightsId: appInsights.id
  }
}

output functionAppName string = functionApp.name
output functionAppUrl string = 'https://${functionApp.properties.defaultHostName}'
output identityClientId string = identity.properties.clientId
output identityPrincipalId string = identity.properties.principalId
output rclKeyVaultIdentityClientId string = rclKeyVaultIdentity.properties.clientId
output keyVaultName string = keyVault.name
output keyVaultUrl string = keyVault.properties.vaultUri
output keyVaultUrls string = keyVaultUrls
output storageAccountName string = storage.name
